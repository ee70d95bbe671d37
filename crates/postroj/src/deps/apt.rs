//! apt's simulation (`apt-get install -s ./pkg.deb`, run with `LC_ALL=C`) as a
//! [`DependencySet`].
//!
//! The lines that matter are apt's own debug notation, stable since apt 0.5:
//!
//! ```text
//! Inst lighttpd (1.4.69-1 Debian:12.5/stable [amd64])                       new package
//! Inst base-files [12.4+deb12u5] (12.4+deb12u6 Debian:12.6/stable [amd64])  upgrade (old version)
//! Inst libfoo:i386 (1.0-1 Debian:12.5/stable, Debian:12/stable [i386]) []   foreign arch, broken-deps note
//! Remv mawk [1.3.4.20200120-3.1]                                             removal
//! Conf lighttpd (1.4.69-1 Debian:12.5/stable [amd64])                       configuration: ignored
//! ```
//!
//! The summary line (`N upgraded, N newly installed, …`) shows the simulation ran to the
//! end; `E:` lines mean it could not resolve.

use super::{DependencySet, DepsError, ResolvedPackage, Result};

pub const TOOL: &str = "apt";

/// The set `output` would install, without `under_test` (the package being probed, which
/// is installed on top of the dependency layer, not in it).
pub fn parse_simulation(output: &str, under_test: &str) -> Result<DependencySet> {
    let mut set = DependencySet::new();
    let mut errors = Vec::new();
    let mut unmet = Vec::new();
    let mut in_unmet = false;
    let mut summary_seen = false;
    for (index, line) in output.lines().enumerate() {
        let unparseable =
            |reason| DepsError::Unparseable { tool: TOOL, line_no: index + 1, line: line.to_owned(), reason };
        if let Some(rest) = line.strip_prefix("Inst ") {
            let (package, local) = parse_inst(rest).map_err(unparseable)?;
            if package.name() == under_test {
                continue;
            }
            if local {
                let name = package.name().to_owned();
                return Err(DepsError::LocalPackageNotUnderTest {
                    tool: TOOL,
                    name,
                    under_test: under_test.to_owned(),
                });
            }
            set.insert(TOOL, package)?;
        } else if let Some(rest) = line.strip_prefix("Remv ").or_else(|| line.strip_prefix("Purg ")) {
            let name = rest.split_whitespace().next().ok_or_else(|| unparseable("a removal without a name"))?;
            set.insert_removal(strip_arch_qualifier(name))?;
        } else if let Some(message) = line.strip_prefix("E: ") {
            errors.push(message.trim().to_owned());
        } else if line.contains(" upgraded, ") && line.contains(" newly installed") {
            summary_seen = true;
        } else if line.starts_with("The following packages have unmet dependencies") {
            in_unmet = true;
            continue;
        }
        // The unmet-dependency explanation is the indented block after its heading.
        if in_unmet {
            if line.starts_with(' ') {
                unmet.push(line.split_whitespace().collect::<Vec<_>>().join(" "));
            } else {
                in_unmet = false;
            }
        }
    }
    if !errors.is_empty() {
        unmet.extend(errors);
        return Err(DepsError::Unresolvable { tool: TOOL, message: unmet.join("; ") });
    }
    if !summary_seen {
        return Err(DepsError::Unrecognised {
            tool: TOOL,
            reason: "no summary line (\"N upgraded, N newly installed, ...\"; run apt with LC_ALL=C)",
        });
    }
    Ok(set)
}

/// `name[:arch] [[old]] (version origin... [arch]) [...]`, the part after `Inst `; true
/// with it when the origin is `local-deb`, apt's name for a file given on the command line.
fn parse_inst(rest: &str) -> std::result::Result<(ResolvedPackage, bool), &'static str> {
    let (name, rest) = rest.split_once(char::is_whitespace).ok_or("no version after the name")?;
    let mut rest = rest.trim_start();
    if let Some(after_bracket) = rest.strip_prefix('[') {
        let (_old, after) = after_bracket.split_once(']').ok_or("unclosed [old version]")?;
        rest = after.trim_start();
    }
    let inner = rest.strip_prefix('(').and_then(|r| r.split_once(')')).ok_or("no (version ... [arch])")?.0;
    let version = inner.split_whitespace().next().ok_or("empty (version ... [arch])")?;
    let arch = inner
        .split_whitespace()
        .next_back()
        .and_then(|last| last.strip_prefix('[')?.strip_suffix(']'))
        .ok_or("no [arch] at the end of (version ... [arch])")?;
    if inner.split_whitespace().count() < 2 {
        return Err("no [arch] after the version");
    }
    let local = inner.split_whitespace().any(|origin| origin == "local-deb");
    let package =
        ResolvedPackage::new(strip_arch_qualifier(name), version, arch).map_err(|_| "a field is not a single word")?;
    Ok((package, local))
}

/// Debian package names never contain `:`; apt writes `name:arch` for foreign ones.
fn strip_arch_qualifier(name: &str) -> &str {
    name.split_once(':').map_or(name, |(plain, _arch)| plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `apt-get install -s ./probe-web_1.0-1_all.deb` on Debian 12, for a .deb built with
    /// dpkg-deb whose only dependency is lighttpd (captured, verbatim).
    const LOCAL_DEB: &str = "\
Reading package lists...
Building dependency tree...
Reading state information...
The following additional packages will be installed:
  lighttpd lighttpd-mod-deflate lighttpd-mod-openssl spawn-fcgi
Suggested packages:
  php-cgi php-fpm lighttpd-doc lighttpd-mod-webdav lighttpd-modules-dbi
  lighttpd-modules-lua
The following NEW packages will be installed:
  lighttpd lighttpd-mod-deflate lighttpd-mod-openssl probe-web spawn-fcgi
0 upgraded, 5 newly installed, 0 to remove and 127 not upgraded.
Inst lighttpd (1.4.69-1 Debian:12.15/oldstable [amd64])
Inst lighttpd-mod-deflate (1.4.69-1 Debian:12.15/oldstable [amd64])
Inst lighttpd-mod-openssl (1.4.69-1 Debian:12.15/oldstable [amd64])
Inst spawn-fcgi (1.6.4-2 Debian:12.15/oldstable [amd64])
Inst probe-web (1.0-1 local-deb [all])
Conf lighttpd (1.4.69-1 Debian:12.15/oldstable [amd64])
Conf lighttpd-mod-deflate (1.4.69-1 Debian:12.15/oldstable [amd64])
Conf lighttpd-mod-openssl (1.4.69-1 Debian:12.15/oldstable [amd64])
Conf spawn-fcgi (1.6.4-2 Debian:12.15/oldstable [amd64])
Conf probe-web (1.0-1 local-deb [all])
";

    /// The same with `Depends: lighttpd, base-files (>= 12.4+deb12u15)` on a host with an
    /// older base-files: an upgrade line (captured, the package lists elided).
    const WITH_UPGRADE: &str = "\
Reading package lists...
Building dependency tree...
Reading state information...
The following packages will be upgraded:
  base-files
1 upgraded, 5 newly installed, 0 to remove and 126 not upgraded.
Inst base-files [12.4+deb12u11] (12.4+deb12u15 Debian:12.15/oldstable [amd64])
Conf base-files (12.4+deb12u15 Debian:12.15/oldstable [amd64])
Inst lighttpd (1.4.69-1 Debian:12.15/oldstable [amd64])
Inst lighttpd-mod-deflate (1.4.69-1 Debian:12.15/oldstable [amd64])
Inst lighttpd-mod-openssl (1.4.69-1 Debian:12.15/oldstable [amd64])
Inst spawn-fcgi (1.6.4-2 Debian:12.15/oldstable [amd64])
Inst probe-up (1.0-1 local-deb [all])
Conf lighttpd (1.4.69-1 Debian:12.15/oldstable [amd64])
Conf lighttpd-mod-deflate (1.4.69-1 Debian:12.15/oldstable [amd64])
Conf lighttpd-mod-openssl (1.4.69-1 Debian:12.15/oldstable [amd64])
Conf spawn-fcgi (1.6.4-2 Debian:12.15/oldstable [amd64])
Conf probe-up (1.0-1 local-deb [all])
";

    /// A dependency that no repository provides (captured).
    const UNMET: &str = "\
Reading package lists...
Building dependency tree...
Reading state information...
Some packages could not be installed. This may mean that you have
requested an impossible situation or if you are using the unstable
distribution that some required packages have not yet been created
or been moved out of Incoming.
The following information may help to resolve the situation:

The following packages have unmet dependencies:
 probe-bad : Depends: no-such-package-xyz but it is not installable
E: Unable to correct problems, you have held broken packages.
";

    fn triples(set: &DependencySet) -> Vec<(String, String, String)> {
        set.packages().map(|p| (p.name().to_owned(), p.version().to_owned(), p.arch().to_owned())).collect()
    }

    fn t(n: &str, v: &str, a: &str) -> (String, String, String) {
        (n.to_owned(), v.to_owned(), a.to_owned())
    }

    #[test]
    fn local_deb_resolves_to_its_dependencies_without_itself() {
        let set = parse_simulation(LOCAL_DEB, "probe-web").unwrap();
        assert_eq!(
            triples(&set),
            [
                t("lighttpd", "1.4.69-1", "amd64"),
                t("lighttpd-mod-deflate", "1.4.69-1", "amd64"),
                t("lighttpd-mod-openssl", "1.4.69-1", "amd64"),
                t("spawn-fcgi", "1.6.4-2", "amd64"),
            ]
        );
        assert_eq!(set.removals().count(), 0);
    }

    #[test]
    fn wrong_name_for_the_package_under_test_is_refused() {
        let err = parse_simulation(LOCAL_DEB, "probe-web_1.0-1_all.deb").unwrap_err();
        assert!(matches!(err, DepsError::LocalPackageNotUnderTest { ref name, .. } if name == "probe-web"), "{err:?}");
    }

    #[test]
    fn upgrade_records_the_new_version() {
        let set = parse_simulation(WITH_UPGRADE, "probe-up").unwrap();
        assert_eq!(triples(&set)[0], t("base-files", "12.4+deb12u15", "amd64"));
        assert_eq!(set.packages().count(), 5);
    }

    #[test]
    fn rebuilt_package_with_same_dependencies_gives_the_same_set() {
        let rebuilt = LOCAL_DEB.replace("probe-web (1.0-1 local-deb", "probe-web (1.0-2 local-deb");
        assert_eq!(parse_simulation(LOCAL_DEB, "probe-web"), parse_simulation(&rebuilt, "probe-web"));
    }

    #[test]
    fn nothing_to_install_is_an_empty_set() {
        let output = "Reading package lists...\nprobe-web is already the newest version (1.0-1).\n\
                      0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded.\n";
        assert!(parse_simulation(output, "probe-web").unwrap().is_empty());
    }

    #[test]
    fn foreign_arch_removals_and_broken_notes() {
        let output = "\
1 upgraded, 1 newly installed, 1 to remove and 0 not upgraded.
Remv mawk [1.3.4.20200120-3.1]
Inst libc6:i386 (2.36-9+deb12u4 Debian:12.5/stable, Debian-Security:12/stable-security [i386]) []
Inst gawk [1:5.2.1-2] (1:5.2.1-2+b1 Debian:12.5/stable [amd64]) [libc6:i386 ]
Conf gawk (1:5.2.1-2+b1 Debian:12.5/stable [amd64])
";
        let set = parse_simulation(output, "probe").unwrap();
        assert_eq!(triples(&set), [t("gawk", "1:5.2.1-2+b1", "amd64"), t("libc6", "2.36-9+deb12u4", "i386")]);
        assert_eq!(set.removals().collect::<Vec<_>>(), ["mawk"]);
    }

    #[test]
    fn unmet_dependencies_are_unresolvable_with_apts_words() {
        let err = parse_simulation(UNMET, "probe-bad").unwrap_err();
        let DepsError::Unresolvable { message, .. } = err else { panic!("{err:?}") };
        assert!(message.contains("probe-bad : Depends: no-such-package-xyz but it is not installable"), "{message}");
        assert!(message.contains("held broken packages"), "{message}");
    }

    #[test]
    fn malformed_inst_line_is_named() {
        let output = "0 upgraded, 1 newly installed, 0 to remove and 0 not upgraded.\nInst lighttpd 1.4.69-1 amd64\n";
        let err = parse_simulation(output, "x").unwrap_err();
        assert!(
            matches!(err, DepsError::Unparseable { line_no: 2, ref line, .. } if line == "Inst lighttpd 1.4.69-1 amd64"),
            "{err:?}"
        );
        let no_arch =
            "0 upgraded, 1 newly installed, 0 to remove and 0 not upgraded.\nInst lighttpd (1.4.69-1 Debian:12)\n";
        assert!(matches!(parse_simulation(no_arch, "x"), Err(DepsError::Unparseable { line_no: 2, .. })));
        assert!(matches!(parse_simulation("Inst lighttpd ([amd64])\n", "x"), Err(DepsError::Unparseable { .. })));
    }

    #[test]
    fn output_without_summary_is_not_a_simulation() {
        for output in ["", "Reading package lists...\n", "Paketlisten werden gelesen …\n"] {
            assert!(matches!(parse_simulation(output, "x"), Err(DepsError::Unrecognised { .. })), "{output:?}");
        }
    }
}
