//! The curated images: a label (`debian-bookworm`) names a distribution release, where
//! its image comes from, and how its package manager installs things. Labels and their
//! aliases (`debian-12`, and the labels of the original postroj) are what `postroj pull`,
//! `pkgprobe --image` and `selftest --image` take; in the store, a label's provisioned
//! image is the tag [`CuratedImage::local_name`].

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

impl Family {
    /// The web server `postroj selftest pkgprobe` installs from the family's own
    /// repositories and probes, as the original postroj did with Apache: one that each
    /// release of the family carries and that listens on port 80 as installed.
    pub fn web_server(self) -> WebServer {
        let (package, unit) = match self {
            Debian | Ubuntu => ("lighttpd", "lighttpd"),
            Fedora | Suse | Arch => ("nginx", "nginx"),
            // nginx is missing from CentOS 7's repositories; httpd is in every one.
            Redhat => ("httpd", "httpd"),
        };
        WebServer { package, unit, port: 80 }
    }
}

/// A service package: its name in the repositories, its systemd unit, its HTTP port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebServer {
    pub package: &'static str,
    pub unit: &'static str,
    pub port: u16,
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

    /// A shell script that installs the packages named as its arguments from the image's
    /// repositories (their package lists fetched first, where the image keeps none).
    pub fn install_named_script(self) -> &'static str {
        match self {
            PackageManager::Apt => {
                "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
                 apt-get install -y -qq --no-install-recommends \"$@\""
            }
            PackageManager::Dnf => "dnf install -y -q \"$@\"",
            PackageManager::Yum => "yum install -y -q \"$@\"",
            PackageManager::Zypper => "zypper --non-interactive --quiet install \"$@\"",
            PackageManager::Pacman => "pacman -Sy --noconfirm --needed \"$@\"",
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
    image("fedora-35", "registry.fedoraproject.org/fedora:35", Fedora, Dnf, None),
    image("fedora-36", "registry.fedoraproject.org/fedora:36", Fedora, Dnf, None),
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

/// Other names of curated images, alias first: the release numbers people type
/// (`debian-12`, `ubuntu-22.04`) and the labels of the original postroj that name a
/// release otherwise (its version names, such as `ubuntu-22` and `debian-unstable`, and
/// its dated or pre-release labels).
static ALIASES: &[(&str, &str)] = &[
    ("debian-9", "debian-stretch"),
    ("debian-10", "debian-buster"),
    ("debian-11", "debian-bullseye"),
    ("debian-12", "debian-bookworm"),
    ("debian-13", "debian-trixie"),
    ("debian-unstable", "debian-sid"),
    ("ubuntu-20.04", "ubuntu-focal"),
    ("ubuntu-20", "ubuntu-focal"),
    ("ubuntu-22.04", "ubuntu-jammy"),
    ("ubuntu-22", "ubuntu-jammy"),
    ("ubuntu-24.04", "ubuntu-noble"),
    ("ubuntu-24", "ubuntu-noble"),
    ("centos-stream8", "centos-8"),
    ("centos-stream9", "centos-9"),
    ("opensuse-15", "opensuse-leap"),
    ("opensuse-latest", "opensuse-tumbleweed"),
    ("sles-latest", "sles-bci"),
    // Amazon Linux 2022 was renamed 2023 before its release.
    ("amazonlinux-2022", "amazonlinux-2023"),
    // Arch is a rolling release: a 2022 snapshot cannot install from today's repositories.
    ("archlinux-20220501", "archlinux"),
];

/// Every curated image, in the order `list-images` shows them.
pub fn all() -> &'static [CuratedImage] {
    CATALOG
}

impl CuratedImage {
    /// The other names this image is found by, in the catalog's order.
    pub fn aliases(&self) -> impl Iterator<Item = &'static str> + '_ {
        ALIASES.iter().filter(move |(_, label)| *label == self.label).map(|(alias, _)| *alias)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown image label {label:?}: {hint}")]
pub struct UnknownLabel {
    pub label: String,
    hint: String,
}

/// The curated image called `label` or one of its aliases; the error names the closest
/// labels and aliases.
pub fn find(label: &str) -> Result<&'static CuratedImage, UnknownLabel> {
    let canonical = ALIASES.iter().find(|(alias, _)| *alias == label).map_or(label, |(_, canonical)| *canonical);
    if let Some(found) = CATALOG.iter().find(|i| i.label == canonical) {
        return Ok(found);
    }
    let prefix = format!("{}-", label.split('-').next().unwrap_or(label));
    let names = CATALOG.iter().map(|i| i.label).chain(ALIASES.iter().map(|(alias, _)| *alias));
    let close: Vec<&str> = names.filter(|name| name.starts_with(&prefix)).collect();
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
        assert!(err.starts_with("unknown image label \"debian-potato\""), "{err}");
        assert!(err.contains("debian-bookworm") && err.contains("debian-12") && err.contains("list-images"), "{err}");
        assert!(!err.contains("ubuntu"), "only names of the same distribution: {err}");
        let err = find("plan9-4").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("see `postroj list-images`"), "{err}");
        // A prefix of a label is not a label, nor is a label in other case.
        assert!(find("debian").is_err() && find("debian-").is_err() && find("Debian-12").is_err());
    }

    #[test]
    fn version_aliases_resolve_to_their_release() {
        let cases = [
            ("debian-10", "debian-buster"),
            ("debian-11", "debian-bullseye"),
            ("debian-12", "debian-bookworm"),
            ("debian-13", "debian-trixie"),
            ("ubuntu-20.04", "ubuntu-focal"),
            ("ubuntu-22.04", "ubuntu-jammy"),
            ("ubuntu-24.04", "ubuntu-noble"),
            ("fedora-41", "fedora-41"),
        ];
        for (alias, label) in cases {
            assert_eq!(find(alias).map(|i| i.label).ok(), Some(label), "{alias}");
        }
        assert_eq!(
            find("debian-12").map(|i| i.local_name()).ok(),
            find("debian-bookworm").map(|i| i.local_name()).ok()
        );
    }

    /// The labels the original postroj listed (its release names) and its version names.
    #[test]
    fn the_original_postroj_labels_resolve() {
        let seed = [
            "debian-stretch",
            "debian-buster",
            "debian-bullseye",
            "debian-bookworm",
            "debian-sid",
            "ubuntu-focal",
            "ubuntu-jammy",
            "fedora-35",
            "fedora-36",
            "fedora-37",
            "rhel-8",
            "rhel-9",
            "opensuse-leap",
            "opensuse-tumbleweed",
            "sles-15",
            "sles-bci",
            "centos-7",
            "centos-8",
            "centos-9",
            "rockylinux-8",
            "amazonlinux-2022",
            "oraclelinux-8",
            "archlinux-20220501",
        ];
        let version_names = ["debian-9", "debian-unstable", "ubuntu-20", "ubuntu-22", "opensuse-15", "sles-latest"];
        for label in seed.iter().chain(&version_names) {
            assert!(find(label).is_ok(), "{label}: {:?}", find(label).err().map(|e| e.to_string()));
        }
        assert_eq!(find("debian-unstable").map(|i| i.label).ok(), Some("debian-sid"));
        assert_eq!(find("archlinux-20220501").map(|i| i.label).ok(), Some("archlinux"));
    }

    #[test]
    fn aliases_name_curated_images_and_no_label() {
        for (alias, label) in ALIASES {
            assert!(all().iter().any(|i| i.label == *label), "{alias} -> {label}: no such label");
            assert!(all().iter().all(|i| i.label != *alias), "{alias} is a label itself");
            assert_eq!(ALIASES.iter().filter(|(a, _)| a == alias).count(), 1, "{alias} twice");
        }
        let bookworm = find("debian-bookworm").map(|i| i.aliases().collect::<Vec<_>>()).unwrap_or_default();
        assert_eq!(bookworm, ["debian-12"]);
    }

    #[test]
    fn every_family_has_a_web_server_on_port_80() {
        assert_eq!(Family::Debian.web_server(), WebServer { package: "lighttpd", unit: "lighttpd", port: 80 });
        assert_eq!(Family::Ubuntu.web_server().package, "lighttpd");
        assert_eq!(Family::Redhat.web_server().unit, "httpd");
    }
}
