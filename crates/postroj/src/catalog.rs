//! The curated images: a label (`debian-bookworm`) names a distribution release, where
//! its image comes from, and how its package manager installs things. Labels are what
//! `postroj pull` and `pkgprobe --image` take; in the store, a label's provisioned image
//! is the tag [`CuratedImage::local_name`].

use std::fmt;

/// A distribution family: decides the package format and manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Debian,
    Ubuntu,
    Fedora,
    Redhat,
    Suse,
    Arch,
}

/// The package manager that provisions an image and installs probed packages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    Apt,
    Dnf,
    Yum,
    Zypper,
    Pacman,
}

impl PackageManager {
    /// A shell script that installs systemd (and curl, for probes that fetch) and then
    /// removes the package manager's caches, so that the provisioning layer carries only
    /// the installed files.
    pub fn provision_script(self) -> &'static str {
        match self {
            PackageManager::Apt => {
                "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; \
                 apt-get install -y -qq --no-install-recommends systemd systemd-sysv dbus curl ca-certificates; \
                 apt-get clean; rm -rf /var/lib/apt/lists/*"
            }
            PackageManager::Dnf => {
                "set -e; dnf install -y -q --allowerasing systemd curl procps-ng; dnf clean all; rm -rf /var/cache/dnf"
            }
            PackageManager::Yum => "set -e; yum install -y -q systemd curl; yum clean all; rm -rf /var/cache/yum",
            PackageManager::Zypper => {
                "set -e; zypper --non-interactive --quiet install systemd curl; zypper --non-interactive clean --all"
            }
            PackageManager::Pacman => "set -e; pacman -Sy --noconfirm --needed systemd curl; pacman -Scc --noconfirm",
        }
    }

    /// A shell script that installs the local package file `$1`, its dependencies from
    /// the distribution's repositories included.
    pub fn install_script(self) -> &'static str {
        match self {
            PackageManager::Apt => {
                "export DEBIAN_FRONTEND=noninteractive; dpkg -i \"$1\" || \
                 { apt-get update -qq && apt-get install -y -qq -f; }"
            }
            PackageManager::Dnf => "dnf install -y -q \"$1\"",
            PackageManager::Yum => "yum localinstall -y -q \"$1\"",
            PackageManager::Zypper => "zypper --non-interactive --no-gpg-checks install \"$1\"",
            PackageManager::Pacman => "pacman -U --noconfirm \"$1\"",
        }
    }

    /// A shell script that installs the local package file `$1` on a dependency layer,
    /// which holds everything it needs: the package manager's low-level tool alone. Should
    /// the layer lack something after all, apt completes it from the bound lists.
    pub fn install_on_layer_script(self) -> &'static str {
        match self {
            PackageManager::Apt => "export DEBIAN_FRONTEND=noninteractive; dpkg -i \"$1\" || apt-get install -y -qq -f",
            other => other.install_script(),
        }
    }

    /// A shell script that installs the packages named by its arguments from the
    /// image's repositories (fetching the package lists first).
    pub fn install_by_name_script(self) -> &'static str {
        match self {
            PackageManager::Apt => {
                "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
                 apt-get install -y -qq --no-install-recommends \"$@\""
            }
            PackageManager::Dnf => "dnf install -y -q \"$@\"",
            PackageManager::Yum => "yum install -y -q \"$@\"",
            PackageManager::Zypper => "zypper --non-interactive install \"$@\"",
            PackageManager::Pacman => "pacman -Sy --noconfirm \"$@\"",
        }
    }

    /// The package file format this manager installs (`deb`, `rpm`, `pkg.tar.zst`).
    pub fn package_format(self) -> &'static str {
        match self {
            PackageManager::Apt => "deb",
            PackageManager::Dnf | PackageManager::Yum | PackageManager::Zypper => "rpm",
            PackageManager::Pacman => "pkg.tar.zst",
        }
    }
}

/// One curated image.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct CuratedImage {
    pub label: &'static str,
    /// Where the image comes from: a registry reference, docker's naming rules.
    pub source: &'static str,
    pub family: Family,
    pub package_manager: PackageManager,
    /// The Debian suite, for images that can also be built from a Debian mirror.
    pub mirror_suite: Option<&'static str>,
}

impl CuratedImage {
    /// The tag of the label's provisioned image in the store.
    pub fn local_name(&self) -> String {
        format!("localhost/postroj/{}:latest", self.label)
    }
}

impl fmt::Display for CuratedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label)
    }
}

const fn image(
    label: &'static str,
    source: &'static str,
    family: Family,
    package_manager: PackageManager,
    mirror_suite: Option<&'static str>,
) -> CuratedImage {
    CuratedImage { label, source, family, package_manager, mirror_suite }
}

use Family::*;
use PackageManager::*;

static CATALOG: &[CuratedImage] = &[
    image("debian-stretch", "docker.io/library/debian:stretch", Debian, Apt, Some("stretch")),
    image("debian-buster", "docker.io/library/debian:buster", Debian, Apt, Some("buster")),
    image("debian-bullseye", "docker.io/library/debian:bullseye", Debian, Apt, Some("bullseye")),
    image("debian-bookworm", "docker.io/library/debian:bookworm", Debian, Apt, Some("bookworm")),
    image("debian-trixie", "docker.io/library/debian:trixie", Debian, Apt, Some("trixie")),
    image("debian-sid", "docker.io/library/debian:sid", Debian, Apt, Some("sid")),
    image("ubuntu-focal", "docker.io/library/ubuntu:focal", Ubuntu, Apt, None),
    image("ubuntu-jammy", "docker.io/library/ubuntu:jammy", Ubuntu, Apt, None),
    image("ubuntu-noble", "docker.io/library/ubuntu:noble", Ubuntu, Apt, None),
    image("fedora-37", "registry.fedoraproject.org/fedora:37", Fedora, Dnf, None),
    image("fedora-38", "registry.fedoraproject.org/fedora:38", Fedora, Dnf, None),
    image("fedora-39", "registry.fedoraproject.org/fedora:39", Fedora, Dnf, None),
    image("fedora-40", "registry.fedoraproject.org/fedora:40", Fedora, Dnf, None),
    image("fedora-41", "registry.fedoraproject.org/fedora:41", Fedora, Dnf, None),
    image("fedora-42", "registry.fedoraproject.org/fedora:42", Fedora, Dnf, None),
    image("centos-7", "docker.io/library/centos:7", Redhat, Yum, None),
    image("centos-8", "quay.io/centos/centos:stream8", Redhat, Dnf, None),
    image("centos-9", "quay.io/centos/centos:stream9", Redhat, Dnf, None),
    image("rhel-8", "registry.access.redhat.com/ubi8/ubi:latest", Redhat, Dnf, None),
    image("rhel-9", "registry.access.redhat.com/ubi9/ubi:latest", Redhat, Dnf, None),
    image("rockylinux-8", "docker.io/rockylinux/rockylinux:8", Redhat, Dnf, None),
    image("rockylinux-9", "docker.io/rockylinux/rockylinux:9", Redhat, Dnf, None),
    image("opensuse-leap", "registry.opensuse.org/opensuse/leap:15", Suse, Zypper, None),
    image("opensuse-tumbleweed", "registry.opensuse.org/opensuse/tumbleweed:latest", Suse, Zypper, None),
    image("sles-15", "registry.suse.com/suse/sle15:latest", Suse, Zypper, None),
    image("sles-bci", "registry.suse.com/bci/bci-init:latest", Suse, Zypper, None),
    image("amazonlinux-2023", "docker.io/library/amazonlinux:2023", Redhat, Dnf, None),
    image("oraclelinux-8", "docker.io/library/oraclelinux:8", Redhat, Dnf, None),
    image("archlinux", "docker.io/library/archlinux:latest", Arch, Pacman, None),
];

/// Every curated image, in the order `list-images` shows them.
pub fn all() -> &'static [CuratedImage] {
    CATALOG
}

#[derive(Debug, thiserror::Error)]
#[error("unknown image label {label:?}: {hint}")]
pub struct UnknownLabel {
    pub label: String,
    hint: String,
}

/// The curated image called `label`; the error names the closest labels.
pub fn find(label: &str) -> Result<&'static CuratedImage, UnknownLabel> {
    if let Some(found) = CATALOG.iter().find(|i| i.label == label) {
        return Ok(found);
    }
    let prefix = label.split('-').next().unwrap_or(label);
    let close: Vec<&str> = CATALOG.iter().filter(|i| i.label.starts_with(prefix)).map(|i| i.label).collect();
    let hint = if close.is_empty() {
        "see `postroj list-images` for the labels".to_owned()
    } else {
        format!("did you mean one of {}? (`postroj list-images` shows all)", close.join(", "))
    };
    Err(UnknownLabel { label: label.to_owned(), hint })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_sources_parse() {
        let mut labels: Vec<&str> = all().iter().map(|i| i.label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), all().len());
        for image in all() {
            assert!(racker::reference::Reference::parse(image.source).is_ok(), "{}", image.source);
            assert!(racker::reference::Reference::parse(&image.local_name()).is_ok(), "{}", image.label);
        }
    }

    #[test]
    fn unknown_labels_suggest_close_ones() {
        assert_eq!(find("debian-bookworm").map(|i| i.family).ok(), Some(Family::Debian));
        let err = find("debian-potato").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("debian-bookworm") && err.contains("list-images"), "{err}");
    }
}
