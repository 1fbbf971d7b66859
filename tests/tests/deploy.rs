//! The deployment files, checked offline with the engines' own validators: the Kubernetes
//! manifests against the API schemas (kubernetes-validate, strict), the PodMonitor against the
//! DaemonSet it scrapes, the systemd unit with `systemd-analyze verify`, and the Grafana
//! dashboard's queries against the metric names `serve` really exposes.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use overlay_trace::stream::record::MountKey;

use overlay_trace::stream::names::Container;

use overlay_trace::stream::event::{Dev, Event, raw};

use overlay_trace::views::prometheus::{openmetrics, registry};

use overlay_trace::model::series::Metrics;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

fn out(c: &mut Command) -> (bool, String) {
    let o = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn kubernetes_manifests_pass_strict_schema_validation() {
    let ds = repo().join("deploy/kubernetes/daemonset.yaml");
    let (ok, text) = out(Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(&ds));
    assert!(ok, "{text}");
    for kind in ["namespace", "serviceaccount", "daemonset"] {
        assert!(
            text.contains(&format!("passed for resource {kind}/overlay-trace")),
            "{text}"
        );
    }
    // The validator does fail: the same DaemonSet with a misspelt field.
    let bad = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        bad.path(),
        fs::read_to_string(&ds)
            .unwrap()
            .replace("hostPID: true", "hostPid: true"),
    )
    .unwrap();
    let (ok, text) = out(Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(bad.path()));
    assert!(!ok, "{text}");
}

/// The NetworkPolicy: valid against the API schema, and it selects the DaemonSet's pods, admits
/// ingress to their metrics port only, and denies everything else (no rule without `from`).
#[test]
fn the_networkpolicy_admits_only_prometheus_to_the_metrics_port() {
    let np = repo().join("deploy/kubernetes/networkpolicy.yaml");
    let (ok, text) = out(Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict"])
        .arg(&np));
    assert!(ok, "{text}");
    assert!(
        text.contains("passed for resource networkpolicy/overlay-trace"),
        "{text}"
    );
    let script = r#"
import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
np = yaml.safe_load(open(sys.argv[2]))
ds = [d for d in docs if d["kind"] == "DaemonSet"][0]
assert np["metadata"]["namespace"] == ds["metadata"]["namespace"]
labels = ds["spec"]["template"]["metadata"]["labels"]
sel = np["spec"]["podSelector"]["matchLabels"]
assert sel and all(labels.get(k) == v for k, v in sel.items()), (sel, labels)
assert np["spec"]["policyTypes"] == ["Ingress"]
c = ds["spec"]["template"]["spec"]["containers"][0]
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
listen = c["args"][c["args"].index("--listen") + 1]
assert int(listen.rsplit(":", 1)[1]) == ports["metrics"], (listen, ports)
for rule in np["spec"]["ingress"]:
    assert rule.get("from"), "a rule without `from` admits everyone"
    assert all(p["port"] in ports or p["port"] in ports.values() for p in rule["ports"]), rule
    assert {p["port"] for p in rule["ports"]} <= {"metrics", ports["metrics"]}, rule
print("ok")
"#;
    let (ok, text) = out(Command::new("python3")
        .args(["-c", script])
        .arg(repo().join("deploy/kubernetes/daemonset.yaml"))
        .arg(&np));
    assert!(ok && text.trim() == "ok", "{text}");
    // The check does fail: the same policy with a rule open to every source.
    let open = tempfile::NamedTempFile::new().unwrap();
    fs::write(
        open.path(),
        fs::read_to_string(&np).unwrap().replace(
            "    - from:\n        - namespaceSelector:\n            matchLabels:\n              kubernetes.io/metadata.name: monitoring\n      ports:",
            "    - ports:",
        ),
    )
    .unwrap();
    let (ok, text) = out(Command::new("python3")
        .args(["-c", script])
        .arg(repo().join("deploy/kubernetes/daemonset.yaml"))
        .arg(open.path()));
    assert!(!ok, "{text}");
}

/// The DaemonSet's promises, read back from the file: the privileges, the host mounts, the
/// probes, and a PodMonitor that selects its pods and names its port.
#[test]
fn the_daemonset_is_least_privilege_and_the_podmonitor_scrapes_it() {
    let script = r#"
import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
pm = yaml.safe_load(open(sys.argv[2]))
ds = [d for d in docs if d["kind"] == "DaemonSet"][0]
pod = ds["spec"]["template"]["spec"]
c = pod["containers"][0]
sc = c["securityContext"]
assert pod["hostPID"] is True
assert not sc.get("privileged", False)
assert sc["capabilities"]["drop"] == ["ALL"]
assert set(sc["capabilities"]["add"]) == {"BPF", "PERFMON", "SYS_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH"}, sc
assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
for p in ["/sys/kernel/btf", "/run", "/var/lib"]:
    assert mounts[p].get("readOnly") is True, p
assert {"operator": "Exists"} in pod["tolerations"]
assert c["resources"]["limits"]["memory"] and c["resources"]["requests"]["cpu"]
assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
assert c["args"][0] == "serve"
labels = ds["spec"]["template"]["metadata"]["labels"]
sel = pm["spec"]["selector"]["matchLabels"]
assert all(labels.get(k) == v for k, v in sel.items()), (sel, labels)
ports = {p["name"] for p in c["ports"]}
assert all(e["port"] in ports and e["path"] == "/metrics" for e in pm["spec"]["podMetricsEndpoints"])
print("ok")
"#;
    let (ok, text) = out(Command::new("python3")
        .args(["-c", script])
        .arg(repo().join("deploy/kubernetes/daemonset.yaml"))
        .arg(repo().join("deploy/kubernetes/podmonitor.yaml")));
    assert!(ok && text.trim() == "ok", "{text}");
}

#[test]
fn the_systemd_unit_verifies() {
    // A root with the unit, the binary where ExecStart says, and systemd's own units.
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir_all(r.join("usr/local/bin")).unwrap();
    fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    fs::create_dir_all(r.join("lib/systemd")).unwrap();
    fs::copy(
        overlay_trace_tests::bin(),
        r.join("usr/local/bin/overlay-trace"),
    )
    .unwrap();
    let unit = fs::read_to_string(repo().join("deploy/systemd/overlay-trace.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/overlay-trace serve "));
    fs::write(r.join("etc/systemd/system/overlay-trace.service"), &unit).unwrap();
    let (ok, text) = out(Command::new("cp")
        .args(["-r", "/lib/systemd/system"])
        .arg(r.join("lib/systemd/")));
    assert!(ok, "{text}");
    let verify = |name: &str| {
        out(Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", r.display()))
            .arg(format!("/etc/systemd/system/{name}")))
    };
    let (ok, text) = verify("overlay-trace.service");
    assert!(ok && text.trim().is_empty(), "{text}");
    // And it does complain: a misspelt directive.
    fs::write(
        r.join("etc/systemd/system/bad.service"),
        unit.replace("NoNewPrivileges=", "NoNewPrivilege="),
    )
    .unwrap();
    let (_, text) = verify("bad.service");
    assert!(text.contains("Unknown key"), "{text}");
}

/// Every metric a dashboard query names is one `serve` exposes (a typo would draw nothing).
#[test]
fn the_grafana_dashboard_queries_metrics_that_exist() {
    let text = fs::read_to_string(repo().join("deploy/grafana/overlay-trace.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["definition"].as_str() {
            exprs.push(q.to_string());
        }
    }
    assert!(exprs.len() >= 8);
    let used: BTreeSet<String> = exprs
        .iter()
        .flat_map(|e| {
            e.match_indices("overlay_trace_")
                .map(|(i, _)| {
                    e[i..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
        })
        .collect();

    // What serve exposes, with one container's series in it.
    let now = Instant::now();
    let mut m = Metrics::new(Duration::from_secs(60), 10);
    let key = MountKey {
        dev: Dev {
            major: 0,
            minor: 50,
        },
        generation: 1,
    };
    for rec in [
        raw::copy_up(50, "etc/a", 10, 10, 1000),
        raw::lookup(50, "a", 1, 2, 500),
        raw::mount(50, 1000),
    ] {
        m.observe(key, &Event::try_from(&rec[..]).unwrap(), now);
    }
    m.named(
        key,
        &Container {
            runtime: "docker".into(),
            name: "web".into(),
            ..Default::default()
        },
        now,
    );
    let exposed = openmetrics(&registry(Arc::new(Mutex::new(m))));
    let names: BTreeSet<String> = exposed
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect();
    for u in &used {
        assert!(
            names.contains(u),
            "the dashboard queries {u}, which serve does not expose; it has {names:?}"
        );
    }
    for needed in [
        "overlay_trace_copy_up_bytes_total",
        "overlay_trace_lookups_total",
        "overlay_trace_events_lost_total",
    ] {
        assert!(used.contains(needed), "{needed} is not on the dashboard");
    }
}
