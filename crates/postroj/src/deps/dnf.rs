//! dnf's transaction table (`dnf install --assumeno ./pkg.rpm`, `LC_ALL=C`) as a
//! [`DependencySet`]. Best effort: the table is meant for people, not programs.
//!
//! dnf 4 (Fedora ≤ 40, CentOS 8), dnf 5 and yum print the same shape: after a header row
//! (`Package  Arch  Version  Repository  Size`; messages before it are skipped), headings
//! (`Installing:`, `Installing dependencies:`, `Upgrading:`, `Removing:` …) each followed
//! by indented rows `name arch version repository size`. dnf 4 and yum put a long name on
//! a row of its own and the rest of the row on the next. `--assumeno` always ends in
//! "Operation aborted" with a failing exit status, so success is read from the output:
//! a `Transaction Summary` (or "Nothing to do") and no `Error:`.

use super::{DependencySet, DepsError, ResolvedPackage, Result};

pub const TOOL: &str = "dnf";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    /// Before the table's header row (`Package Arch Version …`): metadata messages.
    Preamble,
    Install,
    Remove,
    /// Rows that are not packages (module streams, groups) or not installed (skipped).
    Ignored,
}

/// What the rows under `heading` are; `None` for a heading this parser does not know,
/// which is an error rather than a guess: a missed section would give a wrong key.
fn section_of(heading: &str) -> Option<Section> {
    let lower = heading.to_ascii_lowercase();
    if lower.starts_with("removing") {
        Some(Section::Remove)
    } else if lower == "installing group/module packages:" {
        Some(Section::Install)
    } else if lower.starts_with("skipping") || ["module", "group", "environment"].iter().any(|w| lower.contains(w)) {
        Some(Section::Ignored)
    } else if ["installing", "upgrading", "updating", "downgrading", "reinstalling"]
        .iter()
        .any(|p| lower.starts_with(p))
    {
        Some(Section::Install)
    } else {
        None
    }
}

/// The set `output` would install, without `under_test` (the package being probed).
pub fn parse_transaction(output: &str, under_test: &str) -> Result<DependencySet> {
    let mut set = DependencySet::new();
    let mut section = Section::Preamble;
    let mut wrapped_name: Option<String> = None;
    let mut finished = false;
    let lines: Vec<&str> = output.lines().collect();
    for (index, &line) in lines.iter().enumerate() {
        let unparseable =
            |reason| DepsError::Unparseable { tool: TOOL, line_no: index + 1, line: line.to_owned(), reason };
        let trimmed = line.trim();
        if trimmed.starts_with("Error:") || trimmed.starts_with("Failed to resolve the transaction") {
            let message: Vec<_> = lines[index..].iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect();
            return Err(DepsError::Unresolvable { tool: TOOL, message: message.join("; ") });
        }
        if trimmed.starts_with("Transaction Summary") || trimmed.starts_with("Nothing to do") {
            finished = true;
            break;
        }
        if trimmed.is_empty() || trimmed.bytes().all(|b| b == b'=') {
            continue;
        }
        if section == Section::Preamble {
            let mut words = trimmed.split_whitespace();
            if words.next() == Some("Package") && words.any(|w| w == "Version") {
                section = Section::Ignored;
            }
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            if wrapped_name.is_some() {
                return Err(unparseable("a package name without the rest of its row"));
            }
            match section_of(trimmed) {
                Some(next) if trimmed.ends_with(':') => section = next,
                _ => return Err(unparseable("an unknown heading in the transaction table")),
            }
            continue;
        }
        if section == Section::Ignored {
            continue;
        }
        let mut fields: Vec<&str> = trimmed.split_whitespace().collect();
        // `replacing  old.arch version` under an upgrade: what goes, not what comes.
        if fields[0] == "replacing" {
            continue;
        }
        let name = match wrapped_name.take() {
            Some(name) => name,
            None if fields.len() == 1 => {
                wrapped_name = Some(fields[0].to_owned());
                continue;
            }
            None => fields.remove(0).to_owned(),
        };
        let [arch, version, ref rest @ ..] = fields[..] else {
            return Err(unparseable("a package row without name, architecture and version"));
        };
        if section == Section::Remove {
            set.insert_removal(&name)?;
        } else if name != under_test {
            // `@commandline` is dnf's repository for a file given on the command line.
            if rest.first() == Some(&"@commandline") {
                let under_test = under_test.to_owned();
                return Err(DepsError::LocalPackageNotUnderTest { tool: TOOL, name, under_test });
            }
            let package =
                ResolvedPackage::new(&name, version, arch).map_err(|_| unparseable("a field is not a single word"))?;
            set.insert(TOOL, package)?;
        }
    }
    if !finished {
        return Err(DepsError::Unrecognised {
            tool: TOOL,
            reason: "no \"Transaction Summary\" nor \"Nothing to do\" (run dnf with LC_ALL=C)",
        });
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dnf 4 on Fedora 37: `dnf install --assumeno ./probe-web-1.0-1.noarch.rpm` for an rpm
    /// requiring lighttpd, with a long name wrapped and an obsoleted package replaced.
    const DNF4: &str = "\
Last metadata expiration check: 0:01:02 ago on Tue Dec  1 05:31:12 2026.
Dependencies resolved.
================================================================================
 Package                   Architecture Version               Repository   Size
================================================================================
Installing:
 probe-web                 noarch       1.0-1                 @commandline 6.1 k
Installing dependencies:
 lighttpd                  x86_64       1.4.67-1.fc37         updates     333 k
 lighttpd-filesystem       noarch       1.4.67-1.fc37         updates      12 k
 mailcap                   noarch       2.1.53-4.fc37         fedora       33 k
 perl-Locale-Maketext-Simple-extra-long-name-for-the-column
                           noarch       1:0.21-492.fc37       fedora       17 k
Installing weak dependencies:
 lighttpd-mod-openssl      x86_64       1.4.67-1.fc37         updates      25 k
Upgrading:
 openssl-libs              x86_64       1:3.0.8-1.fc37        updates     2.1 M
     replacing  openssl1.1.x86_64 1:1.1.1q-2.fc37

Transaction Summary
================================================================================
Install  6 Packages
Upgrade  1 Package

Total download size: 2.6 M
Operation aborted.
";

    /// dnf 5 on Fedora 41, the same rpm.
    const DNF5: &str = "\
Updating and loading repositories:
Repositories loaded.
Package                       Arch   Version                  Repository        Size
Installing:
 probe-web                    noarch 1.0-1                    @commandline   0.0   B
Installing dependencies:
 lighttpd                     x86_64 1.4.76-1.fc41            fedora       716.9 KiB
 lighttpd-filesystem          noarch 1.4.76-1.fc41            fedora         0.0   B
 mailcap                      noarch 2.1.54-6.fc41            fedora        88.6 KiB

Transaction Summary:
 Installing:         4 packages

Total size of inbound packages is 300 KiB. Need to download 300 KiB.
After this operation, 806 KiB extra will be used (install 806 KiB, remove 0 B).
Operation aborted by the user.
";

    /// dnf 4 when nothing provides a requirement.
    const UNRESOLVABLE: &str = "\
Last metadata expiration check: 0:00:40 ago on Tue Dec  1 05:31:12 2026.
Error: 
 Problem: conflicting requests
  - nothing provides no-such-package-xyz needed by probe-bad-1.0-1.noarch
(try to add '--skip-broken' to skip uninstallable packages)
";

    fn specs(set: &DependencySet) -> Vec<String> {
        set.packages().map(ResolvedPackage::rpm_spec).collect()
    }

    #[test]
    fn dnf4_table_with_wrapped_name_and_upgrade() {
        let set = parse_transaction(DNF4, "probe-web").unwrap();
        assert_eq!(
            specs(&set),
            [
                "lighttpd-1.4.67-1.fc37.x86_64",
                "lighttpd-filesystem-1.4.67-1.fc37.noarch",
                "lighttpd-mod-openssl-1.4.67-1.fc37.x86_64",
                "mailcap-2.1.53-4.fc37.noarch",
                "openssl-libs-1:3.0.8-1.fc37.x86_64",
                "perl-Locale-Maketext-Simple-extra-long-name-for-the-column-1:0.21-492.fc37.noarch",
            ]
        );
        assert_eq!(set.removals().count(), 0);
    }

    #[test]
    fn wrong_name_for_the_package_under_test_is_refused() {
        let err = parse_transaction(DNF4, "probe-web-1.0-1.noarch.rpm").unwrap_err();
        assert!(matches!(err, DepsError::LocalPackageNotUnderTest { ref name, .. } if name == "probe-web"), "{err:?}");
    }

    #[test]
    fn dnf5_table() {
        let set = parse_transaction(DNF5, "probe-web").unwrap();
        assert_eq!(
            specs(&set),
            [
                "lighttpd-1.4.76-1.fc41.x86_64",
                "lighttpd-filesystem-1.4.76-1.fc41.noarch",
                "mailcap-2.1.54-6.fc41.noarch"
            ]
        );
    }

    #[test]
    fn removals_module_streams_and_nothing_to_do() {
        let output = "\
Dependencies resolved.
 Package            Arch     Version                       Repository  Size
Installing:
 probe-web          noarch   1.0-1                         @commandline   6 k
Installing dependencies:
 nginx              x86_64   1:1.14.1-9.module_el8.0.0+184+e34fea82   appstream  570 k
Enabling module streams:
 nginx                       1.14
Removing dependent packages:
 httpd              x86_64   2.4.37-43.module_el8.5.0+1022+b541f3b1   @appstream  4.3 M

Transaction Summary
";
        let set = parse_transaction(output, "probe-web").unwrap();
        assert_eq!(specs(&set), ["nginx-1:1.14.1-9.module_el8.0.0+184+e34fea82.x86_64"]);
        assert_eq!(set.removals().collect::<Vec<_>>(), ["httpd"]);
        let nothing =
            "Package probe-web-1.0-1.noarch is already installed.\nDependencies resolved.\nNothing to do.\nComplete!\n";
        assert!(parse_transaction(nothing, "probe-web").unwrap().is_empty());
    }

    #[test]
    fn errors_are_unresolvable_with_dnfs_words() {
        let err = parse_transaction(UNRESOLVABLE, "probe-bad").unwrap_err();
        let DepsError::Unresolvable { message, .. } = err else { panic!("{err:?}") };
        assert!(message.contains("nothing provides no-such-package-xyz needed by probe-bad-1.0-1.noarch"), "{message}");
    }

    #[test]
    fn malformed_rows_and_headings_are_named() {
        let short_row = "Package Arch Version\nInstalling:\n lighttpd x86_64\nTransaction Summary\n";
        let err = parse_transaction(short_row, "x").unwrap_err();
        assert!(
            matches!(err, DepsError::Unparseable { line_no: 3, ref line, .. } if line == " lighttpd x86_64"),
            "{err:?}"
        );
        let unknown =
            "Package Arch Version\nInstalling:\n lighttpd x86_64 1.4.67-1.fc37 updates 333 k\nFrobnicating:\n";
        assert!(matches!(parse_transaction(unknown, "x"), Err(DepsError::Unparseable { line_no: 4, .. })));
        let dangling = "Package Arch Version\nInstalling:\n a-very-long-name\nUpgrading:\n";
        assert!(matches!(parse_transaction(dangling, "x"), Err(DepsError::Unparseable { line_no: 4, .. })));
    }

    #[test]
    fn output_without_table_is_not_a_transaction() {
        let cut = &DNF4[..DNF4.find("Transaction Summary").unwrap()];
        assert!(matches!(parse_transaction(cut, "probe-web"), Err(DepsError::Unrecognised { .. })));
        assert!(matches!(parse_transaction("", "x"), Err(DepsError::Unrecognised { .. })));
    }
}
