//! Dependency sets and their cache keys: the foundation of pkgprobe's dependency layers.
//!
//! A probe's slow part is installing what the package depends on. Resolving that set
//! without installing (apt's or dnf's simulation, parsed by [`apt`] and [`dnf`]) and
//! naming it by [`DepKey`] (image id + the set) lets a layer holding exactly those
//! packages be built once and reused by every probe that resolves to the same set: a
//! package rebuilt with unchanged dependencies hits, while a new image, a new mirror
//! state (other versions) or a changed dependency list gives another key.
//!
//! ```text
//! simulation output ──parse──> DependencySet ──+ image id──> DepKey ──> layer label / image name
//! ```

pub mod apt;
pub mod dnf;
pub mod layer;

use std::collections::btree_map::{BTreeMap, Entry};
use std::collections::BTreeSet;
use std::fmt;

use racker::digest::Digest;

use crate::catalog::PackageManager;

/// A shell script that simulates installing its arguments (package files by absolute
/// path, or names from the image's repositories), prints what it would install, for
/// [`parse_simulation`], and then installs that set at once, speculatively: a first probe
/// is no slower than a plain install, and the caller commits the container only if it
/// needs the layer and the set installed is the one it parsed (the line after
/// [`INSTALLING`] names it). `None` for the managers without dependency layers (their
/// probes install as before). Its first arguments: `refresh` (fetch the package lists
/// first, into the bound lists directory, without the descriptions' translations, which
/// no probe reads) or `cached`; `true` or `false` (whether
/// Recommends are installed); `online`, `offline` (install only from the bound archives)
/// or `none` (simulate only); the name of the package under test (not installed).
pub fn simulate_script(manager: PackageManager) -> Option<&'static str> {
    match manager {
        PackageManager::Apt => Some(
            r#"export LC_ALL=C DEBIAN_FRONTEND=noninteractive
refresh=$1 recommends=$2 install=$3 under_test=$4; shift 4
if [ "$refresh" = refresh ]; then apt-get update -qq -o Acquire::Languages=none || exit; fi
sim=$(apt-get install -s -o APT::Install-Recommends="$recommends" "$@") || { printf '%s\n' "$sim"; exit 100; }
printf '%s\n' "$sim"
[ "$install" = none ] && exit 0
set -- $(printf '%s\n' "$sim" |
  sed -n 's/^Inst \([^ ]*\) \(\[[^]]*\] \)\{0,1\}(\([^ ]*\) [^[]*\[\([^]]*\)\].*/\1 \3 \4/p' |
  while read -r name version arch; do
    name=${name%%:*}; [ "$name" = "$under_test" ] || echo "$name:$arch=$version"
  done)
[ $# -gt 0 ] || exit 0
echo "postroj-installing: $*"
download=; [ "$install" = offline ] && download=--no-download
apt-get install -y -qq --no-install-recommends $download "$@" || exit
rm -f /var/cache/apt/pkgcache.bin /var/cache/apt/srcpkgcache.bin"#,
        ),
        // dnf's metadata has no host cache yet: rpm images install as before.
        PackageManager::Dnf | PackageManager::Yum | PackageManager::Zypper | PackageManager::Pacman => None,
    }
}

/// Starts the line of [`simulate_script`]'s output that lists what it installs.
pub const INSTALLING: &str = "postroj-installing: ";

/// The simulation's part of [`simulate_script`]'s output: what the install after it
/// printed (its errors included) is not the simulation's.
pub fn simulation_output(output: &str) -> &str {
    match output.find(INSTALLING) {
        Some(at) => &output[..at],
        None => output,
    }
}

/// What [`simulate_script`] installed after its simulation, sorted: `None` if it installed
/// nothing.
pub fn installed_after_simulation(output: &str) -> Option<Vec<String>> {
    let line = output.lines().find_map(|l| l.strip_prefix(INSTALLING))?;
    let mut specs: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
    specs.sort();
    Some(specs)
}

/// The dependency set in the output of [`simulate_script`], without `under_test`.
pub fn parse_simulation(manager: PackageManager, output: &str, under_test: &str) -> Result<DependencySet> {
    match manager {
        PackageManager::Apt => apt::parse_simulation(output, under_test),
        PackageManager::Dnf | PackageManager::Yum => dnf::parse_transaction(output, under_test),
        PackageManager::Zypper | PackageManager::Pacman => Err(DepsError::Unsupported { manager }),
    }
}

/// A shell script that installs exactly the packages given as arguments after the first
/// ([`DependencySet::install_args`]): the body of a dependency layer. The first argument
/// is `offline` (use only what the bound archives hold) or `online`. Recommends are not
/// added: the simulation already chose them, so the layer holds the set and nothing
/// else; nor is apt's binary cache of the lists, which would only weigh the layer down.
pub fn install_set_script(manager: PackageManager) -> Option<&'static str> {
    match manager {
        PackageManager::Apt => Some(
            "export DEBIAN_FRONTEND=noninteractive; download=; \
             if [ \"$1\" = offline ]; then download=--no-download; fi; shift; \
             exec apt-get install -y -qq --no-install-recommends $download \
             -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= \"$@\"",
        ),
        // dnf's metadata has no host cache yet: rpm images install as before.
        PackageManager::Dnf | PackageManager::Yum | PackageManager::Zypper | PackageManager::Pacman => None,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DepsError {
    /// A line the parser should understand but does not: better no key than a wrong one.
    #[error("{tool} output, line {line_no}: {reason}: {line:?}")]
    Unparseable { tool: &'static str, line_no: usize, line: String, reason: &'static str },
    /// The output has none of the marks of a completed simulation (no summary, no table).
    #[error("{tool} output is not a dependency simulation: {reason}")]
    Unrecognised { tool: &'static str, reason: &'static str },
    /// The package manager could not resolve the dependencies; its own words.
    #[error("{tool} cannot resolve the dependencies: {message}")]
    Unresolvable { tool: &'static str, message: String },
    /// A package file given on the command line that is not the one under test: a wrong
    /// `under_test` name, which would put the package in its own dependency layer.
    #[error("{tool} would install {name} from the package file, but the package under test is {under_test}")]
    LocalPackageNotUnderTest { tool: &'static str, name: String, under_test: String },
    #[error("no dependency layers for {manager:?} images")]
    Unsupported { manager: PackageManager },
    #[error("{tool} resolves {name} ({arch}) to two versions, {first} and {second}")]
    ConflictingVersions { tool: &'static str, name: String, arch: String, first: String, second: String },
    /// Names, versions and architectures are single words; anything else would make the
    /// canonical text (and so the key) ambiguous.
    #[error("invalid package {field} {value:?}: must be non-empty, without whitespace or control characters")]
    InvalidField { field: &'static str, value: String },
}

pub type Result<T, E = DepsError> = std::result::Result<T, E>;

/// One package the resolution would install or upgrade to, as apt or dnf names it.
/// Ordered by name, then architecture, then version: the canonical order of a set.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ResolvedPackage {
    name: String,
    arch: String,
    version: String,
}

impl ResolvedPackage {
    pub fn new(name: &str, version: &str, arch: &str) -> Result<ResolvedPackage> {
        Ok(ResolvedPackage {
            name: word("name", name)?,
            arch: word("architecture", arch)?,
            version: word("version", version)?,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// `name:arch=version`, how `apt-get install` is told to install exactly this one.
    pub fn apt_spec(&self) -> String {
        format!("{}:{}={}", self.name, self.arch, self.version)
    }

    /// `name-[epoch:]version-release.arch` (NEVRA), how dnf is told the same.
    pub fn rpm_spec(&self) -> String {
        format!("{}-{}.{}", self.name, self.version, self.arch)
    }
}

fn word(field: &'static str, value: &str) -> Result<String> {
    if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(DepsError::InvalidField { field, value: value.to_owned() });
    }
    Ok(value.to_owned())
}

/// What installing a package would change besides the package itself: the packages
/// installed or upgraded (sorted, each once) and those removed (sorted names).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DependencySet {
    /// Keyed by (name, arch): a package has one version in a transaction.
    installs: BTreeMap<(String, String), ResolvedPackage>,
    removals: BTreeSet<String>,
}

impl DependencySet {
    pub fn new() -> DependencySet {
        DependencySet::default()
    }

    /// Adds a package; the same one twice is kept once, the same name and architecture
    /// with another version is an error of the `tool`'s output.
    pub fn insert(&mut self, tool: &'static str, package: ResolvedPackage) -> Result<()> {
        match self.installs.entry((package.name.clone(), package.arch.clone())) {
            Entry::Vacant(slot) => {
                slot.insert(package);
                Ok(())
            }
            Entry::Occupied(known) if known.get().version == package.version => Ok(()),
            Entry::Occupied(known) => Err(DepsError::ConflictingVersions {
                tool,
                name: package.name,
                arch: package.arch,
                first: known.get().version.clone(),
                second: package.version,
            }),
        }
    }

    pub fn insert_removal(&mut self, name: &str) -> Result<()> {
        self.removals.insert(word("name", name)?);
        Ok(())
    }

    /// The packages to install, in canonical order.
    pub fn packages(&self) -> impl Iterator<Item = &ResolvedPackage> {
        self.installs.values()
    }

    /// The names of packages the transaction removes, sorted.
    pub fn removals(&self) -> impl Iterator<Item = &str> {
        self.removals.iter().map(String::as_str)
    }

    /// The arguments of [`install_set_script`]: each package pinned to its resolved
    /// version and architecture. Removals are left to the package manager, which makes
    /// them again as the installs demand.
    pub fn install_args(&self, manager: PackageManager) -> Vec<String> {
        match manager {
            PackageManager::Apt => self.packages().map(ResolvedPackage::apt_spec).collect(),
            _ => self.packages().map(ResolvedPackage::rpm_spec).collect(),
        }
    }

    /// True when the package needs nothing that the image lacks: no layer is needed.
    pub fn is_empty(&self) -> bool {
        self.installs.is_empty() && self.removals.is_empty()
    }

    /// The text the key hashes, one line per entry, each ending in `\n`:
    ///
    /// ```text
    /// install <name> <arch> <version>     (sorted by name, arch)
    /// remove <name>                       (sorted)
    /// ```
    ///
    /// Fields are single words (checked on construction), so the text is unambiguous.
    pub fn canonical_text(&self) -> String {
        let mut text = String::new();
        for p in self.packages() {
            text.push_str(&format!("install {} {} {}\n", p.name, p.arch, p.version));
        }
        for name in self.removals() {
            text.push_str(&format!("remove {name}\n"));
        }
        text
    }
}

impl std::str::FromStr for DependencySet {
    type Err = DepsError;

    /// Reads back [`DependencySet::canonical_text`] (a cached resolution).
    fn from_str(text: &str) -> Result<DependencySet> {
        let mut set = DependencySet::new();
        for (index, line) in text.lines().enumerate() {
            let unparseable = |reason| DepsError::Unparseable {
                tool: "canonical text",
                line_no: index + 1,
                line: line.to_owned(),
                reason,
            };
            match line.split(' ').collect::<Vec<_>>()[..] {
                ["install", name, arch, version] => {
                    set.insert("canonical text", ResolvedPackage::new(name, version, arch)?)?
                }
                ["remove", name] => set.insert_removal(name)?,
                _ => return Err(unparseable("neither `install NAME ARCH VERSION` nor `remove NAME`")),
            }
        }
        Ok(set)
    }
}

/// The name of a dependency layer: sha256 over
///
/// ```text
/// postroj-deps v1\n
/// image sha256:<image id hex>\n
/// <DependencySet::canonical_text>
/// ```
///
/// The version line lets a later change of the text format invalidate old layers instead
/// of colliding with them.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DepKey {
    digest: Digest,
}

impl DepKey {
    pub const FORMAT: &'static str = "postroj-deps v1";

    pub fn new(image: &Digest, set: &DependencySet) -> DepKey {
        DepKey { digest: Digest::of(Self::canonical_text(image, set).as_bytes()) }
    }

    /// What [`DepKey::new`] hashes; public so that `postroj cache` can show why two keys differ.
    pub fn canonical_text(image: &Digest, set: &DependencySet) -> String {
        format!("{}\nimage {image}\n{}", Self::FORMAT, set.canonical_text())
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The first 12 hex digits: short enough for image tags and container names.
    pub fn short(&self) -> &str {
        self.digest.short()
    }
}

impl fmt::Display for DepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.digest, f)
    }
}

impl fmt::Debug for DepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DepKey({})", self.digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str, arch: &str) -> ResolvedPackage {
        ResolvedPackage::new(name, version, arch).unwrap()
    }

    fn image(byte: u8) -> Digest {
        Digest::of(&[byte])
    }

    fn set_of(packages: &[(&str, &str, &str)]) -> DependencySet {
        let mut set = DependencySet::new();
        for &(n, v, a) in packages {
            set.insert("test", pkg(n, v, a)).unwrap();
        }
        set
    }

    #[test]
    fn set_is_sorted_and_deduplicated() {
        let set = set_of(&[
            ("spawn-fcgi", "1.6.4-2", "amd64"),
            ("lighttpd", "1.4.69-1", "amd64"),
            ("lighttpd", "1.4.69-1", "amd64"),
        ]);
        let names: Vec<_> = set.packages().map(ResolvedPackage::name).collect();
        assert_eq!(names, ["lighttpd", "spawn-fcgi"]);
    }

    #[test]
    fn one_package_with_two_versions_is_an_error() {
        let mut set = set_of(&[("lighttpd", "1.4.69-1", "amd64")]);
        let err = set.insert("apt", pkg("lighttpd", "1.4.70-1", "amd64")).unwrap_err();
        assert!(
            matches!(err, DepsError::ConflictingVersions { ref first, ref second, .. } if first == "1.4.69-1" && second == "1.4.70-1")
        );
        // Another architecture of the same name is another package (multi-arch).
        set.insert("apt", pkg("lighttpd", "1.4.69-1", "i386")).unwrap();
    }

    #[test]
    fn fields_with_whitespace_are_refused() {
        for (n, v, a) in [("a b", "1", "all"), ("a", "", "all"), ("a", "1", "am\nd64")] {
            assert!(matches!(ResolvedPackage::new(n, v, a), Err(DepsError::InvalidField { .. })));
        }
    }

    /// The script's own parse of the simulation (shell, in the container) installs what
    /// the Rust parser reads from the same output. apt-get is a stand-in here that prints
    /// a captured simulation and records the install it is asked for.
    #[test]
    fn the_script_installs_exactly_the_set_the_parser_reads() {
        let dir = tempfile::tempdir().unwrap();
        let simulation = "Inst base-files [12.4+deb12u5] (12.4+deb12u6 Debian:12.6/stable [amd64])\n\
                          Inst libfoo:i386 (1.0-1 Debian:12.5/stable, Debian:12/stable [i386]) []\n\
                          Inst lighttpd (1.4.69-1 Debian:12.5/stable [amd64])\n\
                          Inst probe (1.0 local-deb [all])\n\
                          Conf lighttpd (1.4.69-1 Debian:12.5/stable [amd64])\n\
                          3 upgraded, 1 newly installed, 0 to remove and 0 not upgraded.\n";
        std::fs::write(dir.path().join("simulation"), simulation).unwrap();
        let fake = format!(
            "#!/bin/sh\ncase \"$*\" in *' -s '*) cat {0}/simulation ;; *) echo \"$*\" > {0}/installed ;; esac\n",
            dir.path().display()
        );
        let apt_get = dir.path().join("apt-get");
        std::fs::write(&apt_get, fake).unwrap();
        std::fs::set_permissions(&apt_get, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
        let script = simulate_script(PackageManager::Apt).unwrap();
        let out = std::process::Command::new("sh")
            .args(["-c", script, "resolve", "cached", "false", "online", "probe", "/run/postroj/probe.deb"])
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let output = String::from_utf8_lossy(&out.stdout);
        let mut wanted =
            parse_simulation(PackageManager::Apt, &output, "probe").unwrap().install_args(PackageManager::Apt);
        wanted.sort();
        assert_eq!(installed_after_simulation(&output), Some(wanted.clone()));
        let installed = std::fs::read_to_string(dir.path().join("installed")).unwrap();
        assert!(wanted.iter().all(|w| installed.contains(w.as_str())), "{installed}");
        assert!(!installed.contains("probe"), "the package under test is not in its layer: {installed}");
    }

    #[test]
    fn the_speculative_install_is_read_from_its_marked_line() {
        let output =
            "Inst hello (2.10-3 Debian:12.10/stable [amd64])\npostroj-installing: hello:amd64=2.10-3 a:all=1\n";
        assert_eq!(
            installed_after_simulation(output),
            Some(vec!["a:all=1".to_owned(), "hello:amd64=2.10-3".to_owned()])
        );
        assert_eq!(installed_after_simulation("Inst hello (2.10-3 x [amd64])\n"), None);
        let failed = format!("{output}E: Unable to fetch some archives\n");
        assert!(!simulation_output(&failed).contains("E: ") && simulation_output(&failed).contains("Inst hello"));
    }

    #[test]
    fn canonical_text_reads_back_as_the_same_set() {
        let mut set = set_of(&[("spawn-fcgi", "1.6.4-2", "amd64"), ("libc6", "2.36-9+deb12u7", "amd64")]);
        set.insert_removal("mawk").unwrap();
        let read: DependencySet = set.canonical_text().parse().unwrap();
        assert_eq!(read, set);
        assert!("install a amd64".parse::<DependencySet>().is_err());
        assert!("".parse::<DependencySet>().unwrap().is_empty());
    }

    #[test]
    fn canonical_text_is_documented_form() {
        let mut set = set_of(&[("spawn-fcgi", "1.6.4-2", "amd64"), ("lighttpd", "1.4.69-1", "amd64")]);
        set.insert_removal("mawk").unwrap();
        let text = DepKey::canonical_text(&image(1), &set);
        let expected = format!(
            "postroj-deps v1\nimage {}\ninstall lighttpd amd64 1.4.69-1\ninstall spawn-fcgi amd64 1.6.4-2\nremove mawk\n",
            image(1)
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn key_depends_on_image_and_every_field_but_not_on_order() {
        let base = set_of(&[("lighttpd", "1.4.69-1", "amd64"), ("spawn-fcgi", "1.6.4-2", "amd64")]);
        let reordered = set_of(&[("spawn-fcgi", "1.6.4-2", "amd64"), ("lighttpd", "1.4.69-1", "amd64")]);
        let key = DepKey::new(&image(1), &base);
        assert_eq!(key, DepKey::new(&image(1), &reordered));
        assert_ne!(key, DepKey::new(&image(2), &base));
        for changed in [
            set_of(&[("lighttpd", "1.4.69-2", "amd64"), ("spawn-fcgi", "1.6.4-2", "amd64")]),
            set_of(&[("lighttpd", "1.4.69-1", "arm64"), ("spawn-fcgi", "1.6.4-2", "amd64")]),
            set_of(&[("lighttpd", "1.4.69-1", "amd64")]),
        ] {
            assert_ne!(key, DepKey::new(&image(1), &changed));
        }
        let mut removing = base.clone();
        removing.insert_removal("mawk").unwrap();
        assert_ne!(key, DepKey::new(&image(1), &removing));
    }

    #[test]
    fn key_is_stable_and_short_form_is_its_prefix() {
        let key = DepKey::new(&image(1), &set_of(&[("lighttpd", "1.4.69-1", "amd64")]));
        let text = DepKey::canonical_text(&image(1), &set_of(&[("lighttpd", "1.4.69-1", "amd64")]));
        assert_eq!(key.digest(), &Digest::of(text.as_bytes()));
        assert_eq!(key.short().len(), 12);
        assert!(key.to_string().starts_with(&format!("sha256:{}", key.short())));
    }

    #[test]
    fn dispatch_by_package_manager() {
        let apt = "0 upgraded, 1 newly installed, 0 to remove and 0 not upgraded.\n\
                   Inst lighttpd (1.4.69-1 Debian:12.5/stable [amd64])\n";
        let set = parse_simulation(PackageManager::Apt, apt, "probe").unwrap();
        assert_eq!(set.install_args(PackageManager::Apt), ["lighttpd:amd64=1.4.69-1"]);
        assert_eq!(set.install_args(PackageManager::Dnf), ["lighttpd-1.4.69-1.amd64"]);
        assert!(simulate_script(PackageManager::Apt).unwrap().contains("apt-get install -s"));
        assert!(
            simulate_script(PackageManager::Pacman).is_none() && install_set_script(PackageManager::Zypper).is_none()
        );
        let err = parse_simulation(PackageManager::Pacman, "", "probe").unwrap_err();
        assert_eq!(err, DepsError::Unsupported { manager: PackageManager::Pacman });
    }

    #[test]
    fn specs_name_exact_versions() {
        assert_eq!(pkg("lighttpd", "1.4.69-1", "amd64").apt_spec(), "lighttpd:amd64=1.4.69-1");
        assert_eq!(pkg("openssl-libs", "1:3.0.8-1.fc37", "x86_64").rpm_spec(), "openssl-libs-1:3.0.8-1.fc37.x86_64");
    }
}
