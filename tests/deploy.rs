//! deploy/ checked from the repository: the dashboard and the alert rules name only figures
//! recur exports, the shipped configurations load, and the manifests pass the Kubernetes
//! schema validator and `promtool` (installed by `.ci/run`; under CI=true a missing tool is
//! a failure, elsewhere the check says it was skipped).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use recur::config::{Overrides, Settings};
use recur::metrics::Metrics;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `recur_...` name in `text`.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("recur_") {
        // Only where a name starts (not inside another identifier).
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

/// The figures recur exports, with the series names a histogram adds.
fn exported() -> BTreeSet<String> {
    let json = Metrics::new().json();
    let mut out = BTreeSet::new();
    out.extend(json.as_object().expect("an object").keys().cloned());
    for name in recur::metrics::HISTOGRAMS {
        assert!(out.contains(name), "{name} is exported");
        for suffix in ["_bucket", "_count", "_sum"] {
            out.insert(format!("{name}{suffix}"));
        }
    }
    out
}

#[test]
fn the_dashboard_and_the_alerts_name_only_figures_recur_exports() {
    let exported = exported();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("grafana/dashboards/recur.json")).expect("dashboard JSON");
    let mut exprs = String::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            exprs.push_str(target["expr"].as_str().expect("expr"));
            exprs.push('\n');
        }
    }
    let in_dashboard = names(&exprs);
    let in_alerts = names(&read("prometheus/alerts.yml"));
    for name in in_dashboard.iter().chain(&in_alerts) {
        assert!(
            exported.contains(name),
            "{name} is not a figure recur exports: {exported:?}"
        );
    }
    // What an operator looks at first is on the dashboard.
    for needed in [
        "recur_transitions_total",
        "recur_commit_duration_seconds_bucket",
        "recur_admin_duration_seconds_bucket",
        "recur_timer_lag_seconds",
        "recur_partitions_owned",
        "recur_resident_actors",
    ] {
        assert!(
            in_dashboard.contains(needed),
            "the dashboard lacks {needed}"
        );
    }
    for needed in [
        "recur_timer_lag_seconds",
        "recur_redis_errors_total",
        "recur_lease_changes_total",
        "recur_ready",
    ] {
        assert!(in_alerts.contains(needed), "no alert on {needed}");
    }
}

/// The ConfigMap's recur.toml (the indented block under `recur.toml: |`).
fn configmap_toml() -> String {
    let text = read("kubernetes/configmap.yaml");
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("recur.toml: |"));
    lines.next().expect("a recur.toml key");
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_shipped_configurations_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let configmap = dir.path().join("configmap.toml");
    std::fs::write(&configmap, configmap_toml()).unwrap();
    for file in [configmap, deploy("recur.toml")] {
        let settings = Settings::load(&Overrides {
            config_file: Some(file.clone()),
            ..Overrides::default()
        })
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(!settings.prefix.is_empty());
    }
    let settings = Settings::load(&Overrides {
        config_file: Some(dir.path().join("configmap.toml")),
        ..Overrides::default()
    })
    .unwrap();
    assert_eq!(
        settings.http.listen, "0.0.0.0:9464",
        "the probes reach the pod"
    );
}

/// Runs a validator, or reports why it could not (a failure under CI=true).
fn run_tool(what: &str, mut command: Command) {
    match command.output() {
        Ok(out) => assert!(
            out.status.success(),
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("{what} is not installed ({e}); .ci/run installs it")
        }
        Err(e) => eprintln!("skipped: {what} is not installed ({e}); .ci/run installs it"),
    }
}

fn python_module_installed(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_kubernetes_manifests_pass_the_schema_validator() {
    let manifests = [
        "secret.yaml",
        "configmap.yaml",
        "deployment.yaml",
        "pdb.yaml",
        "service.yaml",
        "redis.yaml",
    ];
    let mut command = Command::new("python3");
    if !python_module_installed("kubernetes_validate") {
        // Reported like a missing program.
        command = Command::new("kubernetes-validate-is-not-installed");
    }
    command.args([
        "-m",
        "kubernetes_validate",
        "-k",
        "1.30.0",
        "--strict",
        "--quiet",
    ]);
    for m in manifests {
        command.arg(deploy(&format!("kubernetes/{m}")));
    }
    run_tool("kubernetes-validate", command);
    // Every manifest is part of the kustomization.
    let kustomization = read("kubernetes/kustomization.yaml");
    for m in manifests {
        assert!(
            kustomization.contains(&format!("- {m}")),
            "{m} not in kustomization.yaml"
        );
    }
}

#[test]
fn the_prometheus_rules_and_config_pass_promtool() {
    let promtool = std::env::var_os("RECUR_PROMTOOL").unwrap_or_else(|| "promtool".into());
    let mut rules = Command::new(&promtool);
    rules
        .args(["check", "rules"])
        .arg(deploy("prometheus/alerts.yml"));
    run_tool("promtool check rules", rules);
    let mut config = Command::new(&promtool);
    config
        .args(["check", "config", "--syntax-only"])
        .arg(deploy("prometheus/prometheus.yml"));
    run_tool("promtool check config", config);
}

/// A YAML file as JSON, through Python's yaml (PyYAML comes with kubernetes-validate).
fn yaml_as_json(path: &str) -> Option<serde_json::Value> {
    let script = "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(deploy(path))
        .output();
    match out {
        Ok(o) if o.status.success() => Some(serde_json::from_slice(&o.stdout).expect("JSON")),
        Ok(o) if std::env::var_os("CI").is_none() => {
            eprintln!(
                "skipped: python3 yaml: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        other => panic!("python3 with yaml is needed (.ci/run installs it): {other:?}"),
    }
}

#[test]
fn the_compose_stack_scrapes_recur_and_mounts_files_that_exist() {
    let Some(compose) = yaml_as_json("docker-compose.yml") else {
        return;
    };
    let services = &compose["services"];
    for s in ["redis", "recur", "prometheus", "grafana"] {
        assert!(services[s].is_object(), "service {s}");
    }
    assert_eq!(
        services["recur"]["environment"]["RECUR_HTTP__LISTEN"], "0.0.0.0:9464",
        "Prometheus reaches the replicas"
    );
    for s in ["prometheus", "grafana", "redis"] {
        for volume in services[s]["volumes"].as_array().expect("volumes") {
            let source = volume.as_str().unwrap().split(':').next().unwrap();
            if let Some(file) = source.strip_prefix("./") {
                assert!(
                    deploy(file).exists(),
                    "{s} mounts {file}, which is not in deploy/"
                );
            }
        }
    }
    let Some(prometheus) = yaml_as_json("prometheus/prometheus.yml") else {
        return;
    };
    let job = &prometheus["scrape_configs"][0];
    assert_eq!(job["job_name"], "recur");
    assert_eq!(job["dns_sd_configs"][0]["port"], 9464);
    let Some(datasources) = yaml_as_json("grafana/provisioning/datasources/prometheus.yml") else {
        return;
    };
    assert_eq!(
        datasources["datasources"][0]["uid"], "prometheus",
        "the dashboard's data source"
    );
}

/// The lines of the `- name: <var>` entry of an env list, up to the next entry.
fn env_entry<'a>(text: &'a str, var: &str) -> Vec<&'a str> {
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim() != format!("- name: {var}"));
    let Some(first) = lines.next() else {
        return Vec::new();
    };
    let indent = first.len() - first.trim_start().len();
    // The entry's other lines are indented deeper than its dash.
    std::iter::once(first)
        .chain(lines.take_while(|l| l.len() - l.trim_start().len() > indent))
        .collect()
}

#[test]
fn the_redis_password_comes_from_a_secret_never_from_a_file_in_git() {
    // Kubernetes: recur and Redis read it from the Secret's key.
    for (manifest, var) in [
        ("kubernetes/deployment.yaml", "RECUR_REDIS__PASSWORD"),
        ("kubernetes/redis.yaml", "REDIS_PASSWORD"),
        ("kubernetes/redis.yaml", "REDISCLI_AUTH"),
    ] {
        let entry = env_entry(&read(manifest), var).join("\n");
        assert!(
            entry.contains("secretKeyRef:")
                && entry.contains("name: recur-redis")
                && entry.contains("key: password")
                && !entry.contains("value:"),
            "{manifest}: {var} from the Secret:\n{entry}"
        );
    }
    let secret = read("kubernetes/secret.yaml");
    assert!(secret.contains("kind: Secret") && secret.contains("name: recur-redis"));
    assert!(read("kubernetes/redis.yaml").contains("$(REDIS_PASSWORD)"));
    // Nothing else carries a password: not the URL, not the ConfigMap.
    for file in ["kubernetes/deployment.yaml", "kubernetes/configmap.yaml"] {
        let text = read(file);
        assert!(!text.contains("password ="), "{file}");
        assert!(
            !text.contains(":6379@") && !text.contains("redis://:"),
            "{file}"
        );
    }
    // Compose: from the environment (deploy/.env), required, not written in the file.
    let compose = read("docker-compose.yml");
    assert!(
        compose.contains("RECUR_REDIS__PASSWORD: ${REDIS_PASSWORD:?"),
        "compose passes the password through"
    );
    assert!(
        compose.contains("--aclfile"),
        "the compose Redis wants it (its users from the ACL file)"
    );
    for line in compose.lines().filter(|l| !l.trim_start().starts_with('#')) {
        assert!(
            !line.contains("change-me") && !line.contains(":change"),
            "no password written in the file: {line}"
        );
    }
    let ignored = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(".gitignore"))
        .expect(".gitignore");
    assert!(
        ignored.lines().any(|l| l == "/deploy/.env"),
        "deploy/.env is not committed"
    );
    assert!(
        read("Dockerfile.dockerignore").contains(".env"),
        "nor built into the image"
    );
}
