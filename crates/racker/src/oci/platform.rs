//! Platforms (`linux/amd64`, `linux/arm/v7`) for choosing from a multi-arch index.

use std::fmt;
use std::str::FromStr;

use oci_spec::image::{Descriptor, ImageIndex};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this host, in OCI (Go) names.
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", None),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            other => (other, None),
        };
        Platform { os: "linux".into(), architecture: architecture.into(), variant: variant.map(Into::into) }
    }

    /// Whether an index entry's platform fits; a missing variant fits any.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        self.os == os
            && self.architecture == architecture
            && match (&self.variant, variant) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
    }

    /// The first manifest of `index` for this platform; entries without a platform
    /// never fit.
    pub fn select<'a>(&self, index: &'a ImageIndex) -> Option<&'a Descriptor> {
        index.manifests().iter().find(|m| {
            m.platform().as_ref().is_some_and(|p| {
                self.matches(&p.os().to_string(), &p.architecture().to_string(), p.variant().as_deref())
            })
        })
    }

    /// The platforms `index` offers, `os/architecture` each, to name when none fits.
    pub fn offered(index: &ImageIndex) -> Vec<String> {
        index
            .manifests()
            .iter()
            .filter_map(|m| m.platform().as_ref().map(|p| format!("{}/{}", p.os(), p.architecture())))
            .collect()
    }
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => {
                Ok(Platform { os: (*os).into(), architecture: (*arch).into(), variant: None })
            }
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform { os: (*os).into(), architecture: (*arch).into(), variant: Some((*variant).into()) })
            }
            _ => Err(format!("invalid platform {s:?}: expected OS/ARCH[/VARIANT], e.g. linux/arm64")),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}
