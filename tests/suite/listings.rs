//! `system df` as docker prints it, the `--filter` keys of `ps`, `volume ls` and
//! `network ls`, `network ls`' columns, and `inspect -f` of volumes and networks (and
//! plain `inspect` finding them), against a store with kept containers, volumes and a
//! network.

use std::path::Path;

use serde_json::Value;

use crate::common::{busybox_store, err, TempStore};

/// What a test made, removed when it ends, passed or failed.
struct Kept<'a> {
    store: &'a TempStore,
    containers: &'static [&'static str],
    volumes: &'static [&'static str],
    networks: &'static [&'static str],
}

impl Drop for Kept<'_> {
    fn drop(&mut self) {
        for c in self.containers {
            let _ = self.store.run(&["rm", "-f", c]);
        }
        for v in self.volumes {
            let _ = self.store.run(&["volume", "rm", "-f", v]);
        }
        for n in self.networks {
            let _ = self.store.run(&["network", "rm", n]);
        }
    }
}

/// Removes an image when the test ends, passed or failed.
struct RemoveImage<'a>(&'a TempStore, &'static str);

impl Drop for RemoveImage<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["rmi", self.1]);
    }
}

/// Runs racker and expects a usage error: exit 125 and one line on standard error.
fn usage_error(store: &TempStore, args: &[&str]) -> String {
    let out = store.run(args);
    let stderr = err(&out);
    assert_eq!(out.status.code(), Some(125), "racker {args:?}: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "racker {args:?}: one line:\n{stderr}");
    stderr
}

/// The words of each line: columns compared without their padding.
fn words(text: &str) -> Vec<Vec<String>> {
    text.lines().map(|l| l.split_whitespace().map(str::to_owned).collect()).collect()
}

#[test]
fn system_df_prints_dockers_rows_and_sections() {
    let (store, _layout) = busybox_store();
    let kept = Kept {
        store: &store,
        containers: &["df-user", "df-wrote", "df-runs"],
        volumes: &["df-data", "df-spare"],
        networks: &[],
    };
    store.ok(&["create", "--name", "df-user", "-v", "df-data:/data", "bb", "true"]);
    store.ok(&["volume", "create", "df-spare"]);
    // 4000 bytes in the volume no container uses: all of it reclaimable.
    let spare = store.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "df-spare"]);
    std::fs::write(Path::new(spare.trim()).join("file"), [7u8; 4000]).expect("writing into the volume");

    let df = store.ok(&["system", "df"]);
    let rows = words(&df);
    assert_eq!(rows[0], ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], "{df}");
    // The image is used by a container: nothing of it is reclaimable.
    assert_eq!(rows[1][..3], ["Images", "1", "1"], "{df}");
    assert_eq!(rows[1][4..], ["0B", "(0%)"], "{df}");
    // A created container runs not, and wrote nothing.
    assert_eq!(rows[2], ["Containers", "1", "0", "0B", "0B"], "{df}");
    assert_eq!(rows[3], ["Local", "Volumes", "2", "1", "4kB", "4kB", "(100%)"], "{df}");
    // racker's own rows after docker's: every layer of bb in use, none reclaimable.
    let layers = store.ok(&["image", "inspect", "-f", "{{len .RootFS.Layers}}", "bb"]);
    assert_eq!(rows[4], ["Layers", layers.trim(), layers.trim(), &rows[1][3], "0B", "(0%)"], "{df}");
    assert_eq!(rows[5][0], "Blobs", "{df}");
    assert!(df.contains("\nDedupe ratio: "), "{df}");

    let fields = store.ok(&["system", "df", "--format", "{{.Type}}|{{.TotalCount}}|{{.Active}}|{{.Reclaimable}}"]);
    let fields: Vec<&str> = fields.lines().take(3).collect();
    assert_eq!(fields, ["Images|1|1|0B (0%)", "Containers|1|0|0B", "Local Volumes|2|1|4kB (100%)"]);
    let table = store.ok(&["system", "df", "--format", "table {{.Type}}\\t{{.Active}}"]);
    assert!(table.starts_with("TYPE            ACTIVE\nImages          1\n"), "{table}");
    for line in store.ok(&["system", "df", "--format", "json"]).lines() {
        let row: Value = serde_json::from_str(line).expect("a JSON object a line");
        for key in ["Type", "TotalCount", "Active", "Size", "Reclaimable"] {
            assert!(row[key].is_string(), "{key} in {row}");
        }
    }

    // -v: docker's three sections, in order, with docker's columns.
    let verbose = store.ok(&["system", "df", "-v"]);
    let lines = words(&verbose);
    let at = |title: &str| verbose.lines().position(|l| l == title).unwrap_or_else(|| panic!("{title}\n{verbose}"));
    let (images, containers, volumes) =
        (at("Images space usage:"), at("Containers space usage:"), at("Local Volumes space usage:"));
    assert!(images < containers && containers < volumes, "{verbose}");
    let header = |at: usize| lines[at + 2].join(" ");
    assert_eq!(header(images), "REPOSITORY TAG IMAGE ID CREATED SIZE SHARED SIZE UNIQUE SIZE CONTAINERS");
    assert_eq!(lines[images + 3][..2], ["bb", "latest"], "{verbose}");
    assert_eq!(lines[images + 3].last().map(String::as_str), Some("1"), "one container uses bb: {verbose}");
    assert_eq!(header(containers), "CONTAINER ID IMAGE COMMAND LOCAL VOLUMES SIZE CREATED STATUS NAMES");
    let user = &lines[containers + 3];
    assert_eq!(user[1..4], ["bb:latest", "\"true\"", "1"], "{verbose}");
    assert_eq!(user.last().map(String::as_str), Some("df-user"), "{verbose}");
    assert_eq!(header(volumes), "VOLUME NAME LINKS SIZE");
    assert_eq!(lines[volumes + 3], ["df-data", "1", "0B"], "{verbose}");
    assert_eq!(lines[volumes + 4], ["df-spare", "0", "4kB"], "{verbose}");
    let json: Value = serde_json::from_str(&store.ok(&["system", "df", "-v", "--format", "json"])).expect("JSON");
    assert_eq!(json["Images"][0]["Containers"], "1", "{json}");
    assert_eq!(json["Containers"][0]["Names"], "df-user", "{json}");
    assert_eq!(json["Volumes"][1]["Name"], "df-spare", "{json}");
    assert_eq!(json["Volumes"][1]["Size"], "4kB", "{json}");

    // A running container is active; what a stopped one wrote is reclaimable.
    store.ok(&["run", "--name", "df-wrote", "bb", "sh", "-c", "head -c 50000 /dev/zero > /written"]);
    store.ok(&["run", "-d", "--name", "df-runs", "bb", "sleep", "1000"]);
    let wrote: u64 = {
        let json: Value =
            serde_json::from_str(store.ok(&["system", "df", "--format", "json"]).lines().nth(1).expect("row"))
                .expect("JSON");
        assert_eq!((&json["TotalCount"], &json["Active"]), (&"3".into(), &"1".into()), "{json}");
        json["ReclaimableBytes"].as_u64().expect("bytes")
    };
    assert!((50_000..60_000).contains(&wrote), "the stopped container's 50000 bytes: {wrote}");
    let verbose = store.ok(&["system", "df", "-v", "--format", "json"]);
    let json: Value = serde_json::from_str(&verbose).expect("JSON");
    let wrote_row = json["Containers"].as_array().into_iter().flatten().find(|c| c["Names"] == "df-wrote");
    assert!(wrote_row.is_some_and(|c| c["Status"].as_str().is_some_and(|s| s.starts_with("Exited (0)"))), "{verbose}");
    store.ok(&["rm", "-f", "df-runs", "df-wrote"]);

    drop(kept);
    store.assert_clean();
}

#[test]
fn filters_of_ps_volumes_and_networks_and_their_inspect_templates() {
    let (store, _layout) = busybox_store();
    let kept = Kept {
        store: &store,
        containers: &["flt-a", "flt-b", "flt-c", "flt-d"],
        volumes: &["flt-data", "flt-spare"],
        networks: &["flt-net"],
    };
    store.ok(&["network", "create", "--subnet", "10.93.9.0/24", "flt-net"]);
    store.ok(&["volume", "create", "--label", "tier=db", "flt-spare"]);
    store.ok(&["create", "--name", "flt-a", "bb", "true"]);
    store.ok(&["create", "--name", "flt-b", "-v", "flt-data:/data", "bb", "true"]);
    store.ok(&["create", "--name", "flt-c", "--network", "flt-net", "-p", "8080:80", "bb", "true"]);
    let ps = |filters: &[&str]| {
        let mut args = vec!["ps", "-a", "--format", "{{.Names}}"];
        for f in filters {
            args.extend(["-f", f]);
        }
        let mut names: Vec<String> = store.ok(&args).lines().map(str::to_owned).collect();
        names.sort();
        names
    };
    assert_eq!(ps(&["before=flt-b"]), ["flt-a"]);
    assert_eq!(ps(&["since=flt-a"]), ["flt-b", "flt-c"]);
    assert_eq!(ps(&["since=flt-a", "before=flt-c"]), ["flt-b"]);
    assert_eq!(ps(&["volume=flt-data"]), ["flt-b"]);
    assert_eq!(ps(&["volume=/data"]), ["flt-b"]);
    assert_eq!(ps(&["network=flt-net"]), ["flt-c"]);
    assert_eq!(ps(&["publish=80"]), ["flt-c"]);
    assert_eq!(ps(&["publish=80/tcp"]), ["flt-c"]);
    assert_eq!(ps(&["publish=79-81"]), ["flt-c"]);
    assert_eq!(ps(&["publish=80/udp"]), Vec::<String>::new());
    assert_eq!(ps(&["publish=8080"]), Vec::<String>::new(), "the container's port, as docker");
    // expose=: what the image exposes, and what the container publishes.
    store.ok(&["commit", "-c", "EXPOSE 9000/udp", "flt-a", "flt-exposing:1"]);
    let _image = RemoveImage(&store, "flt-exposing:1");
    store.ok(&["create", "--name", "flt-d", "flt-exposing:1", "true"]);
    assert_eq!(ps(&["expose=9000/udp"]), ["flt-d"]);
    assert_eq!(ps(&["expose=9000"]), Vec::<String>::new(), "tcp unless named");
    assert_eq!(ps(&["expose=80"]), ["flt-c"]);
    assert_eq!(ps(&["expose=80", "expose=8999-9001/udp"]), ["flt-c", "flt-d"]);
    store.ok(&["rm", "flt-d"]);
    assert!(usage_error(&store, &["ps", "-f", "before=nope"]).contains("No such container: nope"));
    assert!(usage_error(&store, &["ps", "-f", "publish=http"]).contains("publish=http"));

    // volume ls -f
    let volumes = |filter: &str| store.ok(&["volume", "ls", "-q", "-f", filter]);
    assert_eq!(volumes("dangling=true"), "flt-spare\n");
    assert_eq!(volumes("dangling=false"), "flt-data\n");
    assert_eq!(volumes("label=tier=db"), "flt-spare\n");
    assert_eq!(volumes("label=tier=web"), "");
    assert_eq!(volumes("name=data"), "flt-data\n");
    assert_eq!(volumes("driver=local"), "flt-data\nflt-spare\n");
    let unknown = usage_error(&store, &["volume", "ls", "-f", "colour=red"]);
    assert!(unknown.contains("invalid filter 'colour'"), "{unknown}");
    usage_error(&store, &["volume", "ls", "-f", "dangling=maybe"]);

    // network ls: docker's columns, -q the IDs, -f.
    let id = store.ok(&["network", "inspect", "-f", "{{.Id}}", "flt-net"]).trim().to_owned();
    let table = store.ok(&["network", "ls", "-f", "name=flt"]);
    assert_eq!(
        words(&table),
        [vec!["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"], vec![&id, "flt-net", "bridge", "local"]]
    );
    assert_eq!(store.ok(&["network", "ls", "-q", "-f", "type=custom"]), format!("{id}\n"));
    assert_eq!(store.ok(&["network", "ls", "--no-trunc", "-q", "-f", &format!("id={id}")]), format!("{id}\n"));
    let builtin = store.ok(&["network", "ls", "--format", "{{.Name}}", "-f", "type=builtin"]);
    assert_eq!(builtin, "private\n");
    assert_eq!(store.ok(&["network", "ls", "-q", "-f", "driver=macvlan"]), "");
    assert_eq!(store.ok(&["network", "ls", "--format", "{{.Subnet}}", "-f", "name=flt-net"]), "10.93.9.0/24\n");
    usage_error(&store, &["network", "ls", "-f", "type=other"]);
    usage_error(&store, &["network", "ls", "-f", "colour=red"]);

    // inspect -f of volumes and networks; plain inspect finds them, --type picks.
    assert_eq!(
        store.ok(&["volume", "inspect", "-f", "{{.Name}} {{.Driver}} {{.Labels}}", "flt-spare"]),
        "flt-spare local map[tier:db]\n"
    );
    assert_eq!(store.ok(&["network", "inspect", "--format", "{{.Name}} {{.Driver}}", "flt-net"]), "flt-net bridge\n");
    assert_eq!(store.ok(&["network", "inspect", "-f", "{{.Name}}", &id]), "flt-net\n", "by its ID");
    assert_eq!(store.ok(&["inspect", "-f", "{{.Name}} {{.Scope}}", "flt-spare"]), "flt-spare local\n");
    assert_eq!(store.ok(&["inspect", "-f", "{{.Name}} {{.Driver}}", "flt-net"]), "flt-net bridge\n");
    let mountpoint = store.ok(&["volume", "inspect", "-f", "{{.Mountpoint}}", "flt-data"]);
    assert!(Path::new(mountpoint.trim()).is_dir(), "{mountpoint}");
    assert_eq!(store.ok(&["inspect", "--type", "volume", "-f", "{{.Mountpoint}}", "flt-data"]), mountpoint);
    assert_eq!(store.ok(&["inspect", "--type", "network", "-f", "{{.Id}}", "flt-net"]), format!("{id}\n"));
    let o = store.run(&["inspect", "--type", "volume", "flt-net"]);
    assert_eq!(o.status.code(), Some(1), "no volume flt-net: {}", err(&o));
    let o = store.run(&["inspect", "flt-nothing"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(err(&o).contains("No such object: flt-nothing"), "{}", err(&o));
    usage_error(&store, &["volume", "inspect", "-f", "{{.Name", "flt-spare"]);

    drop(kept);
    store.assert_clean();
}
