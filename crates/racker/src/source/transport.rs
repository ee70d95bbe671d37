//! Where `racker pull` takes an image from, as podman spells it: `oci:DIR[:REF]` (an
//! OCI image layout directory), `oci-archive:FILE[:REF]` (a tar of one), or else a
//! registry reference (`docker://` optional).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use super::{import_layout, ArchiveFs, DirFs, Imported, LayoutFs, Result};
use crate::progress::Progress;
use crate::reference::{Reference, ReferenceError};
use crate::store::Store;

/// A pull's source, parsed from its one argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `NAME[:TAG|@DIGEST]` from a registry.
    Registry(Reference),
    /// A local OCI image layout.
    Layout(Layout),
}

/// How a layout is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutFormat {
    /// `oci:`, a directory.
    Directory,
    /// `oci-archive:`, a tar of one (possibly compressed).
    Archive,
}

/// `oci:PATH[:REF]` or `oci-archive:PATH[:REF]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub format: LayoutFormat,
    pub path: PathBuf,
    /// Which of the layout's images: its `org.opencontainers.image.ref.name`.
    pub reference: Option<String>,
}

impl Transport {
    /// Splits off an `oci:`/`oci-archive:` prefix; anything else is a registry reference.
    pub fn parse(input: &str) -> Result<Self, ReferenceError> {
        let format = match input.split_once(':') {
            Some(("oci", rest)) => Some((LayoutFormat::Directory, rest)),
            Some(("oci-archive", rest)) => Some((LayoutFormat::Archive, rest)),
            _ => None,
        };
        Ok(match format {
            Some((format, rest)) => {
                let (path, reference) = split_location(rest);
                Transport::Layout(Layout { format, path: path.into(), reference: reference.map(str::to_owned) })
            }
            None => Transport::Registry(Reference::parse(input)?),
        })
    }
}

impl Layout {
    /// The name its images get when the layout does not name them, as podman names
    /// them: `localhost/DIRNAME[:REF]`, the directory's name made a valid repository.
    pub fn default_name(&self) -> Result<Reference, ReferenceError> {
        let base = repository_component(self.path.file_name().map(|n| n.to_string_lossy()).as_deref().unwrap_or(""));
        match &self.reference {
            Some(r) => Reference::parse(&format!("localhost/{base}:{r}")),
            None => Reference::parse(&format!("localhost/{base}")),
        }
    }

    /// The layout's files; an archive is unpacked into the store's ingest directory
    /// (on the store's file system, so its blobs can be moved in).
    pub fn open(&self, store: &Store) -> Result<Box<dyn LayoutFs>> {
        Ok(match self.format {
            LayoutFormat::Directory => Box::new(DirFs(self.path.clone())),
            LayoutFormat::Archive => Box::new(ArchiveFs::open(&self.path, &store.root().join("ingest"))?),
        })
    }

    /// Imports the layout's image (the one [`Layout::reference`] names, or every one),
    /// named `default_name` where the layout names none.
    pub fn import(
        &self,
        store: &Store,
        files: &dyn LayoutFs,
        default_name: Reference,
        progress: Arc<dyn Progress>,
    ) -> Result<Vec<Imported>> {
        import_layout(store, files, self.reference.as_deref(), &[default_name], progress)
    }
}

/// A layout as it was given; a registry reference normalised (`docker.io/library/…`).
impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Registry(reference) => write!(f, "{reference}"),
            Transport::Layout(layout) => write!(f, "{layout}"),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.format {
            LayoutFormat::Directory => "oci",
            LayoutFormat::Archive => "oci-archive",
        };
        write!(f, "{prefix}:{}", self.path.display())?;
        if let Some(r) = &self.reference {
            write!(f, ":{r}")?;
        }
        Ok(())
    }
}

/// Splits `PATH[:REF]`: the last colon starts a REF unless what follows it is empty or
/// has a slash (then the colon is the path's).
fn split_location(arg: &str) -> (&str, Option<&str>) {
    match arg.rsplit_once(':') {
        Some((path, r)) if !r.contains('/') && !r.is_empty() => (path, Some(r)),
        _ => (arg, None),
    }
}

/// A directory name made into a valid repository path component (`.tmpAB_c` → `tmpab-c`).
fn repository_component(name: &str) -> String {
    let mapped: String = name.to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let parts: Vec<&str> = mapped.split('-').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        "image".into()
    } else {
        parts.join("-")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn layout(input: &str) -> Layout {
        match Transport::parse(input).unwrap() {
            Transport::Layout(layout) => layout,
            other => panic!("{input}: not a layout: {other:?}"),
        }
    }

    #[test]
    fn layouts_take_an_optional_reference_after_the_last_colon() {
        let l = layout("oci:/tmp/img:v1");
        assert_eq!(
            (l.format, l.path.as_path(), l.reference.as_deref()),
            (LayoutFormat::Directory, Path::new("/tmp/img"), Some("v1"))
        );
        let l = layout("oci-archive:img.tar");
        assert_eq!(
            (l.format, l.path.as_path(), l.reference.as_deref()),
            (LayoutFormat::Archive, Path::new("img.tar"), None)
        );
        // A colon followed by a path, or by nothing, belongs to the path.
        assert_eq!(layout("oci:/a:b/c").path, Path::new("/a:b/c"));
        assert_eq!(layout("oci:/a/b:").path, Path::new("/a/b:"));
        assert_eq!(layout("oci:/a/b:").reference, None);
    }

    #[test]
    fn anything_else_is_a_registry_reference() {
        let debian = Reference::parse("debian").unwrap();
        assert_eq!(Transport::parse("docker://debian").unwrap(), Transport::Registry(debian.clone()));
        assert_eq!(Transport::parse("debian").unwrap(), Transport::Registry(debian));
        assert!(Transport::parse("Debian").is_err());
    }

    #[test]
    fn displays_as_given() {
        for input in ["oci:/tmp/img:v1", "oci:/a:b/c", "oci-archive:x.tar", "oci:/a/b:"] {
            assert_eq!(Transport::parse(input).unwrap().to_string(), input);
        }
    }

    #[test]
    fn unnamed_layouts_are_named_after_their_directory() {
        assert_eq!(layout("oci:/tmp/.tmpAB_c").default_name().unwrap().to_string(), "localhost/tmpab-c:latest");
        assert_eq!(layout("oci:/tmp/My Image:v2").default_name().unwrap().to_string(), "localhost/my-image:v2");
        assert_eq!(layout("oci:/").default_name().unwrap().to_string(), "localhost/image:latest");
        assert!(layout("oci:/tmp/img:-bad").default_name().is_err());
    }

    #[test]
    fn repository_components() {
        assert_eq!(repository_component("--a__b--"), "a-b");
        assert_eq!(repository_component("___"), "image");
        assert_eq!(repository_component("Ubuntu.24"), "ubuntu-24");
    }
}
