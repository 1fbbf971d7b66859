use super::*;
use crate::enrich::mountinfo::parse_mountinfo;

// Captured from a real dockerd (Debian docker.io 20.10, data root /tmp/dk/data).
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/docker");
const CID: &str = "153bf8403972b4a60b573a9e331118a8d092d693bba049f105e24cb201a77b9f";

fn mount() -> OverlayMount {
    let text = fs::read_to_string(format!("{FIXTURES}/mountinfo")).unwrap();
    parse_mountinfo(&text).into_values().next().unwrap()
}

#[test]
fn on_disk_metadata_names_the_mount() {
    let all = from_disk(Path::new(&format!("{FIXTURES}/root")));
    assert_eq!(all.len(), 1);
    let c = &all[0];
    assert_eq!(c.container.id, CID);
    assert_eq!(c.container.name, "web");
    assert_eq!(c.container.image, "base:1");
    assert!(
        owns(c, &mount()),
        "fixture data root differs from the live one: matched by overlay2 id"
    );
}

#[test]
fn on_disk_cache_follows_containers_created_and_removed() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path();
    let add = |id: &str, name: &str, mount_id: Option<&str>| {
        fs::create_dir_all(root.join("containers").join(id)).unwrap();
        fs::write(
            root.join("containers").join(id).join("config.v2.json"),
            format!(r#"{{"Name":"/{name}","Config":{{"Image":"i"}},"Image":"sha256:1"}}"#),
        )
        .unwrap();
        if let Some(m) = mount_id {
            let dir = root.join("image/overlay2/layerdb/mounts").join(id);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("mount-id"), m).unwrap();
        }
    };
    let mut cache = OnDisk::default();
    add("aa", "one", Some("m1"));
    add("bb", "two", None);
    let names = |v: Vec<DockerContainer>| {
        let mut n: Vec<(String, bool)> = v
            .into_iter()
            .map(|c| (c.container.name, c.upperdir.is_some()))
            .collect();
        n.sort();
        n
    };
    assert_eq!(
        names(cache.read(root)),
        [("one".into(), true), ("two".into(), false)]
    );
    // The second container's layer appears (it was being created), the first is removed, a
    // third is created: each read sees the directory as it is now.
    add("bb", "two", Some("m2"));
    fs::remove_dir_all(root.join("containers/aa")).unwrap();
    add("cc", "three", Some("m3"));
    assert_eq!(
        names(cache.read(root)),
        [("three".into(), true), ("two".into(), true)]
    );
    assert_eq!(names(cache.read(root)), names(from_disk(root)));
}

#[test]
fn api_inspect_response_names_the_mount() {
    let text = fs::read_to_string(format!("{FIXTURES}/inspect.json")).unwrap();
    let v: bollard::models::ContainerInspectResponse = serde_json::from_str(&text).unwrap();
    let c = from_inspect(&v).unwrap();
    assert_eq!(c.container.name, "web");
    assert_eq!(c.container.image, "base:1");
    assert_eq!(c.container.short_id(), "153bf8403972");
    assert_eq!(c.upperdir.as_deref(), mount().upperdir.as_deref());
    assert!(owns(&c, &mount()));
}

#[test]
fn relative_upperdir_and_containerd_store() {
    assert_eq!(
        overlay2_id("/var/lib/docker/overlay2/abc/diff"),
        Some("abc")
    );
    assert_eq!(overlay2_id("abc/diff"), Some("abc"));
    assert_eq!(overlay2_id("/x/upper"), None);
    let mut m = mount();
    let c = DockerContainer {
        container: Container {
            runtime: "docker".into(),
            id: "f00d".repeat(16),
            name: "n".into(),
            image: "i".into(),
            namespace: None,
            role: None,
            pod: None,
            image_id: None,
        },
        upperdir: None,
    };
    assert!(!owns(&c, &m));
    let mut init = mount();
    init.upperdir = Some(init.upperdir.unwrap().replace("/diff", "-init/diff"));
    let web = from_disk(Path::new(&format!("{FIXTURES}/root"))).remove(0);
    assert!(!owns(&web, &init) && owns_init_layer(&web, &init));
    let found = find([web.clone()].iter(), &init).unwrap();
    assert_eq!(
        (found.name.as_str(), found.role.as_deref()),
        ("web", Some("init-layer"))
    );
    assert_eq!(find([web].iter(), &mount()).unwrap().role, None);
    m.mount_point = format!("/var/lib/docker/rootfs/overlayfs/{}", "f00d".repeat(16));
    assert!(owns(&c, &m));
}

#[test]
fn container_matching_by_name_and_id() {
    let c = from_disk(Path::new(&format!("{FIXTURES}/root")))
        .remove(0)
        .container;
    assert!(c.matches("web") && c.matches("/web") && c.matches("153bf840") && c.matches(CID));
    assert!(!c.matches("153") && !c.matches("db"));
}

#[test]
fn an_api_call_in_flight_stops_when_the_final_pass_begins() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut d = Docker::new().unwrap();
        let (finishing, rx) = tokio::sync::watch::channel(false);
        d.interrupt_on(rx);
        let started = std::time::Instant::now();
        let signal = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = finishing.send(true);
        };
        // A daemon that never answers: cut short by the signal, long before API_TIMEOUT.
        let (call, ()) = tokio::join!(d.call(std::future::pending::<()>()), signal);
        assert!(matches!(call, Call::Interrupted));
        assert!(started.elapsed() < API_TIMEOUT / 2);
        // In the final pass itself the signal is set already and interrupts nothing.
        d.final_pass();
        assert!(matches!(
            d.call(std::future::ready(7)).await,
            Call::Answered(7)
        ));
    });
}

/// A fake Engine API on a unix socket: `exited` old containers and one new one, `web`, whose
/// upperdir is `/var/lib/docker/overlay2/new/diff`. Counts the inspections it answers.
fn fake_engine(
    dir: &Path,
    exited: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{BufRead as _, Write as _};
    let sock = dir.join("docker.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let inspected = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = inspected.clone();
    let list: Vec<serde_json::Value> = (0..exited)
        .map(|i| serde_json::json!({"Id": format!("{i:064x}"), "Created": 1000 + i}))
        .chain([serde_json::json!({"Id": "f".repeat(64), "Created": 999_999})])
        .collect();
    let list = serde_json::to_string(&list).unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
            let mut first = String::new();
            let _ = reader.read_line(&mut first);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
            let body = if path.contains("/containers/json") {
                list.clone()
            } else if path.contains("/info") {
                r#"{"DockerRootDir":"/nonexistent-root"}"#.to_string()
            } else if let Some(id) = path
                .split("/containers/")
                .nth(1)
                .map(|r| r[..64].to_string())
            {
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (name, upper) = if id == "f".repeat(64) {
                    ("web".to_string(), "new".to_string())
                } else {
                    (format!("old{id}"), format!("old{id}"))
                };
                serde_json::json!({"Id": id, "Name": format!("/{name}"), "Image": "sha256:1",
                    "Config": {"Image": "img"}, "GraphDriver": {"Name": "overlay2",
                    "Data": {"UpperDir": format!("/var/lib/docker/overlay2/{upper}/diff")}}})
                .to_string()
            } else {
                "{}".to_string()
            };
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (sock.display().to_string(), inspected)
}

#[test]
fn a_new_container_is_named_at_once_beside_thousands_of_exited_ones() {
    let d = tempfile::tempdir().unwrap();
    let (sock, inspected) = fake_engine(d.path(), 5000);
    let mut m = mount();
    m.upperdir = Some("/var/lib/docker/overlay2/new/diff".into());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let c = rt.block_on(Docker::at(&sock).resolve(&m));
    assert_eq!(c.map(|c| c.name).as_deref(), Some("web"));
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "named in {:?}",
        started.elapsed()
    );
    let n = inspected.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(n, 1, "the newest container is inspected first, and alone");
}
