//! `racker save`: images to a `docker save` archive or an OCI archive, on standard
//! output or in a file.

use std::io::IsTerminal as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use racker::reference::Reference;
use racker::store::{ArchiveFormat, SaveImage, Store};

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum, PartialEq, Eq)]
pub enum SaveFormat {
    /// `docker save`'s archive: manifest.json, repositories, configs and layers
    #[default]
    DockerArchive,
    /// An OCI image layout in a tar (oci-layout, index.json, blobs)
    OciArchive,
}

#[derive(clap::Args)]
pub struct SaveArgs {
    /// Images to save, by name or id; blobs they share are written once
    #[arg(required = true)]
    images: Vec<String>,
    /// Write to this file instead of standard output
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Archive format
    #[arg(long, value_enum, default_value_t)]
    format: SaveFormat,
}

pub fn save(store: &Store, args: &SaveArgs) -> Result<()> {
    let images = chosen(store, &args.images)?;
    let format = match args.format {
        SaveFormat::DockerArchive => ArchiveFormat::Docker,
        SaveFormat::OciArchive => ArchiveFormat::Oci,
    };
    match &args.output {
        Some(path) => {
            // Written beside the target and renamed: a failed save leaves no partial file.
            let tmp = Partial(path.with_file_name(format!(
                ".{}.racker-save-{}",
                path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
                std::process::id()
            )));
            let file = std::fs::File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp.0)
                .with_context(|| format!("creating {}", tmp.0.display()))?;
            racker::store::save(store, &images, format, std::io::BufWriter::with_capacity(1 << 20, &file))
                .with_context(|| format!("saving to {}", path.display()))?;
            std::fs::rename(&tmp.0, path).with_context(|| format!("writing {}", path.display()))?;
            std::mem::forget(tmp);
        }
        None => {
            if std::io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            let mut stdout = crate::cli::CheckedStdout::default();
            let result =
                racker::store::save(store, &images, format, std::io::BufWriter::with_capacity(1 << 20, &mut stdout));
            if let Some(e) = stdout.failed {
                return Err(crate::cli::StdoutError(e).into());
            }
            result.context("saving to standard output")?;
        }
    }
    Ok(())
}

/// A temporary file removed unless it was renamed into place.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The images named, each once, with the names the user gave them (none for an id).
fn chosen(store: &Store, names: &[String]) -> Result<Vec<SaveImage>> {
    let mut images: Vec<SaveImage> = Vec::new();
    for name in names {
        let id = store.resolve(name)?;
        let record = store.image(&id)?;
        let tagged = |r: &Reference| r.tag().is_some_and(|t| record.summary.tags.contains(&(r.name(), t.to_owned())));
        let reference = [Reference::parse(name).ok(), Reference::local_alternative(name).and_then(Result::ok)]
            .into_iter()
            .flatten()
            .find(tagged);
        match images.iter_mut().find(|i| i.id == id) {
            Some(image) => {
                if let Some(reference) = reference.filter(|r| !image.names.contains(r)) {
                    image.names.push(reference);
                }
            }
            None => images.push(SaveImage { id, names: reference.into_iter().collect() }),
        }
    }
    Ok(images)
}
