use super::*;
use figment::Jail;

/// Runs `f` in a figment `Jail`: a global lock, a scratch working directory, and
/// environment changes undone afterwards. Every test here that reads the environment
/// goes through it, so tests setting `RECUR_` variables never affect each other.
fn jailed(f: impl FnOnce(&mut Jail) -> Result<(), figment::Error>) {
    Jail::expect_with(f);
}

#[test]
fn an_endpoint_s_debug_form_leaves_its_secret_out() {
    let ep = EndpointSettings {
        id: Some("billing".into()),
        url: "https://billing.example/recur".into(),
        secret: "whsec_do_not_print".into(),
        events: vec!["*".into()],
        test_clocks: false,
    };
    let printed = format!("{ep:?} {:?}", vec![ep.clone()]);
    assert!(!printed.contains("whsec_do_not_print"), "{printed}");
    assert!(printed.contains("billing.example") && printed.contains("***"));
}

#[test]
fn webhook_endpoints_come_from_a_file_or_the_environment_and_are_checked() {
    jailed(|jail| {
        jail.set_env(
            "RECUR_WEBHOOKS__ENDPOINTS",
            r#"[{id="b", url="http://127.0.0.1:9/hook", secret="s", events=["*"]}]"#,
        );
        let s = Settings::load(&Overrides::default()).expect("valid endpoints");
        assert_eq!(s.webhooks.endpoints.len(), 1);
        assert_eq!(s.webhooks.endpoints[0].id(), "b");
        assert!(s.webhooks.endpoints[0].wants("orderCreated"));
        jail.create_file(
            "hooks.toml",
            "[[webhooks.endpoints]]\nurl = \"https://x.example/h\"\nsecret = \"s\"\nevents = [\"orderCreated\"]\n",
        )?;
        jail.set_env("RECUR_WEBHOOKS__ENDPOINTS", "[]");
        let file = Overrides {
            config_file: Some("hooks.toml".into()),
            ..Overrides::default()
        };
        // The environment wins over the file.
        assert!(Settings::load(&file).unwrap().webhooks.endpoints.is_empty());
        Ok(())
    });
    jailed(|jail| {
        let cases = [
            (
                r#"[{url="ftp://x", secret="s", events=["*"]}]"#,
                "webhooks.endpoints[0].url",
            ),
            (
                r#"[{url="http://x/h", secret="", events=["*"]}]"#,
                "webhooks.endpoints[0].secret",
            ),
            (
                r#"[{url="http://x/h", secret="s", events=["orderExploded"]}]"#,
                "webhooks.endpoints[0].events",
            ),
            (
                r#"[{url="http://x/h", secret="s", events=[]}]"#,
                "webhooks.endpoints[0].events",
            ),
            (
                r#"[{url="http://x/h", secret="s", events=["*"]}, {url="http://x/h", secret="t", events=["*"]}]"#,
                "webhooks.endpoints[1].id",
            ),
        ];
        for (value, key) in cases {
            jail.set_env("RECUR_WEBHOOKS__ENDPOINTS", value);
            assert_invalid_key(load_err(&Overrides::default()), key);
        }
        jail.set_env("RECUR_WEBHOOKS__ENDPOINTS", "[]");
        jail.set_env("RECUR_WEBHOOKS__RETRY_MAX", "1s");
        assert_invalid_key(load_err(&Overrides::default()), "webhooks.retry_max");
        Ok(())
    });
}

fn load_err(overrides: &Overrides) -> ConfigError {
    match Settings::load(overrides) {
        Ok(settings) => panic!("expected an error, loaded {settings:?}"),
        Err(e) => e,
    }
}

fn assert_invalid_key(error: ConfigError, expected: &str) {
    match &error {
        ConfigError::Invalid { key, .. } if key == expected => {
            assert!(error.to_string().contains(expected), "{error}");
        }
        other => panic!("expected an invalid `{expected}`, got {other:?}"),
    }
}

#[test]
fn defaults_load() {
    jailed(|_| {
        let s = Settings::load(&Overrides::default()).expect("defaults are valid");
        assert_eq!(s.prefix, "recur");
        assert!(s.uses_embedded_redis());
        assert!(!s.redis.cluster);
        assert_eq!(s.redis_address(), None);
        assert_eq!(s.redis.embedded.binary, PathBuf::from("redis-server"));
        assert_eq!(s.redis.embedded.data_dir, PathBuf::from("data/redis"));
        assert!(s.redis.embedded.appendonly);
        assert_eq!(s.clock.mode, ClockMode::System);
        assert_eq!(s.clock.start, None);
        assert_eq!(
            s.lifecycle.payment_grace_period,
            Duration::from_secs(72 * 3600)
        );
        assert_eq!(s.lifecycle.payment_restart_grace, Duration::from_secs(3600));
        assert_eq!(s.actors.idle_passivation, Duration::from_secs(60));
        assert_eq!(s.scheduler.window, Duration::from_secs(60));
        assert_eq!(s.scheduler.batch_size, 1024);
        assert_eq!(s.scheduler.lanes, 16);
        assert_eq!(s.admin.reply_retention, Duration::from_secs(24 * 3600));
        assert_eq!(s.admin.max_request_bytes, 1_048_576);
        assert_eq!(s.events.max_len, 16_000);
        assert_eq!(
            u64::from(s.partitions) * s.events.max_len,
            1_024_000,
            "about a million changes retained by default (docs/DECISIONS.md)"
        );
        assert!(s.events.publish);
        assert_eq!(s.cron.trim_events.to_string(), "0 */5 * * * *");
        assert_eq!(s.cron.reconcile_stats.to_string(), "0 0 * * * *");
        assert_eq!(s.log.format, LogFormat::Human);
        assert_eq!(s.log.level, "info");
        assert!(s.status_manager.is_empty());
        assert!(s.promo_codes.is_empty());
        Ok(())
    });
}

#[test]
fn defaults_without_environment_match() {
    let s = Settings::defaults().expect("defaults are valid");
    assert_eq!(s.prefix, "recur");
}

#[test]
fn env_overrides_defaults_and_nests_with_double_underscore() {
    jailed(|jail| {
        jail.set_env("RECUR_REDIS__URL", "redis://127.0.0.1:7000/0");
        jail.set_env("RECUR_SCHEDULER__BATCH_SIZE", "16");
        jail.set_env("RECUR_LIFECYCLE__PAYMENT_GRACE_PERIOD", "4d");
        jail.set_env("RECUR_LIFECYCLE__DUNNING__FINAL_ACTION", "PAUSE");
        jail.set_env("RECUR_LOG__FORMAT", "json");
        // Read by the benchmarks and the CI script, not settings: allowed.
        jail.set_env("RECUR_BENCH_AUTO_AOF_REWRITE", "off");
        jail.set_env("RECUR_PROMTOOL", "/usr/bin/promtool");
        let s = Settings::load(&Overrides::default()).expect("valid");
        assert_eq!(s.redis.url.as_deref(), Some("redis://127.0.0.1:7000/0"));
        assert!(!s.uses_embedded_redis());
        assert_eq!(s.scheduler.batch_size, 16);
        assert_eq!(
            s.lifecycle.payment_grace_period,
            Duration::from_secs(4 * 86_400)
        );
        assert_eq!(
            s.lifecycle.dunning.final_action,
            crate::domain::order::FinalAction::Pause
        );
        assert_eq!(s.log.format, LogFormat::Json);
        Ok(())
    });
}

#[test]
fn file_then_env_then_flags() {
    jailed(|jail| {
        jail.create_file(
            "recur.toml",
            r#"
            prefix = "from-file"
            [clock]
            mode = "simulated"
            start = "2025-01-31T10:00:00+02:00"
            [redis]
            url = "redis://file:6379"
            [status_manager.backoffice]
            ACTIVE = ["PAUSED", "CANCELED"]
            [promo_codes.WELCOME10]
            kind = "percent"
            value = "10"
            first_cycles = 3
            "#,
        )?;
        jail.set_env("RECUR_PREFIX", "from-env");
        jail.set_env("RECUR_REDIS__URL", "redis://env:6379");
        let overrides = Overrides {
            config_file: Some("recur.toml".into()),
            redis_url: Some("redis://flag:6379".into()),
            ..Overrides::default()
        };
        let s = Settings::load(&overrides).expect("valid");
        assert_eq!(s.prefix, "from-env");
        assert_eq!(s.redis.url.as_deref(), Some("redis://flag:6379"));
        assert_eq!(s.clock.mode, ClockMode::Simulated);
        assert_eq!(
            s.clock.start.map(|t| t.to_rfc3339()),
            Some("2025-01-31T08:00:00+00:00".to_string())
        );
        assert_eq!(
            s.status_manager["backoffice"]["ACTIVE"],
            vec!["PAUSED".to_string(), "CANCELED".to_string()]
        );
        let promo = &s.promo_codes["WELCOME10"];
        assert_eq!(promo.kind, PromoKind::Percent);
        assert_eq!(promo.value, Decimal::TEN);
        assert_eq!(promo.first_cycles, Some(3));
        assert_eq!(promo.expires, None);
        Ok(())
    });
}

#[test]
fn clock_flags_override() {
    jailed(|_| {
        let overrides = Overrides {
            clock_mode: Some(ClockMode::Simulated),
            clock_start: Some("2030-01-01T00:00:00Z".into()),
            prefix: Some("t1".into()),
            ..Overrides::default()
        };
        let s = Settings::load(&overrides).expect("valid");
        assert_eq!(s.clock.mode, ClockMode::Simulated);
        assert_eq!(s.prefix, "t1");
        assert!(s.clock.start.is_some());
        Ok(())
    });
}

#[test]
fn empty_redis_url_means_embedded() {
    jailed(|jail| {
        jail.set_env("RECUR_REDIS__URL", "");
        let s = Settings::load(&Overrides::default()).expect("valid");
        assert!(s.uses_embedded_redis());
        Ok(())
    });
}

#[test]
fn a_cluster_takes_seed_nodes_from_env_or_flags() {
    jailed(|jail| {
        let seeds = "redis://127.0.0.1:7000,redis://127.0.0.1:7001";
        jail.set_env("RECUR_REDIS__URL", seeds);
        jail.set_env("RECUR_REDIS__CLUSTER", "true");
        let s = Settings::load(&Overrides::default()).expect("valid");
        assert!(s.redis.cluster && !s.uses_embedded_redis());
        assert_eq!(
            s.redis_address(),
            Some(RedisAddress::cluster(vec![
                "redis://127.0.0.1:7000".into(),
                "redis://127.0.0.1:7001".into()
            ]))
        );
        jail.set_env("RECUR_REDIS__CLUSTER", "false");
        // The list without the cluster setting is refused, naming the setting to use...
        let error = load_err(&Overrides::default());
        assert!(
            error.to_string().contains("redis.cluster = true"),
            "{error}"
        );
        assert_invalid_key(error, "redis.url");
        // ... which the flag gives.
        let flag = Overrides {
            redis_cluster: Some(true),
            ..Overrides::default()
        };
        assert!(Settings::load(&flag).expect("valid").redis.cluster);
        Ok(())
    });
}

#[test]
fn replication_waits_need_a_redis_with_replicas_and_a_timeout() {
    jailed(|jail| {
        let s = Settings::load(&Overrides::default()).expect("valid");
        assert_eq!(s.redis.wait_replicas, 0, "off by default");
        assert_eq!(s.redis.wait_timeout, Duration::from_secs(1));
        assert_eq!(s.redis_wait(), None);
        // The embedded Redis has no replica to wait for.
        jail.set_env("RECUR_REDIS__WAIT_REPLICAS", "1");
        let error = load_err(&Overrides::default());
        assert!(error.to_string().contains("embedded Redis"), "{error}");
        assert_invalid_key(error, "redis.wait_replicas");
        jail.set_env("RECUR_REDIS__URL", "redis://127.0.0.1:7000");
        jail.set_env("RECUR_REDIS__WAIT_TIMEOUT", "250ms");
        let s = Settings::load(&Overrides::default()).expect("valid");
        assert_eq!(
            s.redis_wait(),
            Some(crate::store::WaitFor {
                replicas: 1,
                timeout_ms: 250
            })
        );
        // WAIT n 0 would block forever.
        jail.set_env("RECUR_REDIS__WAIT_TIMEOUT", "0s");
        assert_invalid_key(load_err(&Overrides::default()), "redis.wait_timeout");
        Ok(())
    });
}

#[test]
fn a_cluster_without_seed_nodes_is_refused_not_embedded() {
    jailed(|jail| {
        jail.set_env("RECUR_REDIS__CLUSTER", "true");
        let error = load_err(&Overrides::default());
        assert!(error.to_string().contains("embedded Redis"), "{error}");
        assert_invalid_key(error, "redis.cluster");
        // A unix socket cannot be a cluster node.
        jail.set_env("RECUR_REDIS__URL", "redis+unix:///tmp/redis.sock");
        assert_invalid_key(load_err(&Overrides::default()), "redis.url");
        jail.set_env("RECUR_REDIS__CLUSTER", "yes please");
        assert_invalid_key(load_err(&Overrides::default()), "redis.cluster");
        Ok(())
    });
}

#[test]
fn redis_credentials_come_from_settings_over_the_url_and_stay_as_written() {
    jailed(|jail| {
        jail.set_env(
            "RECUR_REDIS__URL",
            "rediss://url-user:url-pass@127.0.0.1:7000",
        );
        // Read as written: the environment layer would make these a number or a float.
        for password in ["0123", "1.50", "true", "[x]", " spaced "] {
            jail.set_env("RECUR_REDIS__PASSWORD", password);
            let s = Settings::load(&Overrides::default()).expect("valid");
            assert_eq!(s.redis.password.as_deref(), Some(password));
        }
        jail.set_env("RECUR_REDIS__PASSWORD", "s3cret-env");
        jail.set_env("RECUR_REDIS__USERNAME", "app");
        let s = Settings::load(&Overrides::default()).expect("valid");
        let address = s.redis_address().expect("configured");
        assert_eq!(address.access().password.as_deref(), Some("s3cret-env"));
        assert_eq!(address.access().username.as_deref(), Some("app"));
        let info = address
            .access()
            .connection_info(address.urls()[0])
            .expect("a url");
        assert_eq!(info.redis_settings().password(), Some("s3cret-env"));
        assert_eq!(info.redis_settings().username(), Some("app"));
        // Nothing printed holds a password.
        for printed in [
            format!("{s:?}"),
            format!("{address:?}"),
            address.to_string(),
        ] {
            assert!(!printed.contains("s3cret-env"), "{printed}");
            assert!(!printed.contains("url-pass"), "{printed}");
        }
        assert_eq!(address.to_string(), "rediss://url-user:***@127.0.0.1:7000");
        Ok(())
    });
}

#[test]
fn a_password_that_is_not_a_string_is_refused_without_repeating_it() {
    jailed(|jail| {
        jail.create_file(
            "recur.toml",
            "[redis]\nurl = \"redis://127.0.0.1:7000\"\npassword = 98765432\n",
        )?;
        let error = load_err(&Overrides {
            config_file: Some("recur.toml".into()),
            ..Overrides::default()
        });
        assert!(!error.to_string().contains("98765432"), "{error}");
        assert!(error.to_string().contains("quote it"), "{error}");
        Ok(())
    });
}

#[test]
fn redis_secrets_and_tls_need_a_url_that_fits() {
    jailed(|jail| {
        // The embedded Redis has no password and no TLS.
        jail.set_env("RECUR_REDIS__PASSWORD", "p");
        assert_invalid_key(load_err(&Overrides::default()), "redis.password");
        jail.set_env("RECUR_REDIS__PASSWORD", "");
        jail.set_env("RECUR_REDIS__TLS__INSECURE", "true");
        assert_invalid_key(load_err(&Overrides::default()), "redis.tls");
        // TLS settings with a plain URL would silently not be used.
        jail.set_env("RECUR_REDIS__URL", "redis://127.0.0.1:7000");
        let error = load_err(&Overrides::default());
        assert!(error.to_string().contains("rediss://"), "{error}");
        assert_invalid_key(error, "redis.tls");
        jail.set_env("RECUR_REDIS__TLS__INSECURE", "false");
        jail.set_env("RECUR_REDIS__URL", "rediss://127.0.0.1:7000");
        jail.set_env("RECUR_REDIS__TLS__CERT_FILE", "client.pem");
        assert_invalid_key(load_err(&Overrides::default()), "redis.tls.key_file");
        jail.set_env("RECUR_REDIS__TLS__KEY_FILE", "client.key");
        jail.set_env("RECUR_REDIS__TLS__CA_FILE", "ca.pem");
        let s = Settings::load(&Overrides::default()).expect("valid");
        let address = s.redis_address().unwrap();
        let tls = &address.access().tls;
        assert_eq!(tls.ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(tls.cert_file, Some(PathBuf::from("client.pem")));
        assert_eq!(tls.key_file, Some(PathBuf::from("client.key")));
        assert!(!tls.insecure);
        // Every seed of a TLS cluster is rediss://.
        jail.set_env("RECUR_REDIS__CLUSTER", "true");
        jail.set_env(
            "RECUR_REDIS__URL",
            "rediss://127.0.0.1:7000,redis://127.0.0.1:7001",
        );
        assert_invalid_key(load_err(&Overrides::default()), "redis.url");
        Ok(())
    });
}

#[test]
fn webhook_secrets_and_url_passwords_are_not_printed() {
    jailed(|jail| {
        jail.set_env(
            "RECUR_WEBHOOKS__ENDPOINTS",
            r#"[{url="https://hook:tok3n@x.example/h", secret="whsec_s3cret", events=["*"]}]"#,
        );
        let s = Settings::load(&Overrides::default()).expect("valid");
        let ep = &s.webhooks.endpoints[0];
        // The id (Redis keys, metrics, logs) is the URL masked.
        assert_eq!(ep.id(), "https://hook:***@x.example/h");
        let printed = format!("{s:?}");
        assert!(!printed.contains("whsec_s3cret"), "{printed}");
        assert!(!printed.contains("tok3n"), "{printed}");
        jail.set_env(
            "RECUR_WEBHOOKS__ENDPOINTS",
            r#"[{url="ftp://u:tok3n@x", secret="s", events=["*"]}]"#,
        );
        let error = load_err(&Overrides::default());
        assert!(!error.to_string().contains("tok3n"), "{error}");
        Ok(())
    });
}

#[test]
fn dunning_retries_must_come_before_the_deadline() {
    jailed(|jail| {
        // The default retries (1d, 2d) do not fit a 2-day grace.
        jail.set_env("RECUR_LIFECYCLE__PAYMENT_GRACE_PERIOD", "2d");
        assert_invalid_key(load_err(&Overrides::default()), "lifecycle.dunning.retries");
        jail.set_env("RECUR_LIFECYCLE__PAYMENT_GRACE_PERIOD", "72h");
        jail.set_env("RECUR_LIFECYCLE__DUNNING__FINAL_ACTION", "SOMETIMES");
        assert!(Settings::load(&Overrides::default()).is_err());
        Ok(())
    });
}

#[test]
fn bad_cron_names_the_key() {
    jailed(|jail| {
        jail.set_env("RECUR_CRON__TRIM_EVENTS", "every five minutes");
        assert_invalid_key(load_err(&Overrides::default()), "cron.trim_events");
        Ok(())
    });
}

#[test]
fn bad_clock_mode_names_the_key() {
    jailed(|jail| {
        jail.set_env("RECUR_CLOCK__MODE", "sundial");
        let error = load_err(&Overrides::default());
        assert!(error.to_string().contains("RECUR_CLOCK__MODE"), "{error}");
        assert_invalid_key(error, "clock.mode");
        Ok(())
    });
}

#[test]
fn bad_clock_start_names_the_key() {
    jailed(|_| {
        let overrides = Overrides {
            clock_start: Some("tomorrow".into()),
            ..Overrides::default()
        };
        assert_invalid_key(load_err(&overrides), "clock.start");
        Ok(())
    });
}

#[test]
fn bad_values_name_their_keys() {
    let cases = [
        ("RECUR_LOG__FORMAT", "xml", "log.format"),
        ("RECUR_LOG__LEVEL", "recur=loud", "log.level"),
        (
            "RECUR_ACTORS__IDLE_PASSIVATION",
            "60",
            "actors.idle_passivation",
        ),
        ("RECUR_SCHEDULER__WINDOW", "0s", "scheduler.window"),
        ("RECUR_SCHEDULER__BATCH_SIZE", "0", "scheduler.batch_size"),
        ("RECUR_SCHEDULER__LANES", "0", "scheduler.lanes"),
        ("RECUR_PREFIX", "recur:", "prefix"),
        ("RECUR_PREFIX", "re{p1}cur", "prefix"),
        ("RECUR_PREFIX", "recur}", "prefix"),
        ("RECUR_PARTITIONS", "0", "partitions"),
        ("RECUR_PARTITIONS", "1025", "partitions"),
        ("RECUR_PARTITIONS", "many", "partitions"),
        ("RECUR_REDIS__URL", "http://nope", "redis.url"),
        ("RECUR_LOG__LEVEL", "verbose", "log.level"),
        ("RECUR_LOG__LEVEL", "warning", "log.level"),
    ];
    for (var, value, key) in cases {
        jailed(|jail| {
            jail.set_env(var, value);
            assert_invalid_key(load_err(&Overrides::default()), key);
            Ok(())
        });
    }
}

fn unknown_env(names: &[&str]) -> (String, Option<String>) {
    match check_env(names.iter().map(|n| n.to_string())) {
        Err(ConfigError::UnknownEnv {
            variable,
            suggestion,
        }) => (variable, suggestion),
        other => panic!("{names:?}: expected an unknown variable, got {other:?}"),
    }
}

#[test]
fn environment_typos_are_refused_naming_the_nearest_variable() {
    let cases = [
        ("RECUR_REDIS_URL", Some("RECUR_REDIS__URL")),
        ("RECUR_LOG_LEVEL", Some("RECUR_LOG__LEVEL")),
        (
            "RECUR_SCHEDULER__BATCHSIZE",
            Some("RECUR_SCHEDULER__BATCH_SIZE"),
        ),
        (
            "RECUR_REDIS__EMBEDDED_DATA_DIR",
            Some("RECUR_REDIS__EMBEDDED__DATA_DIR"),
        ),
        ("recur_partition", Some("RECUR_PARTITIONS")),
        ("RECUR_ADMIN__XYZZY_QUUX", None),
        (
            "RECUR_WEBHOOKS__ENDPOINTS__0__URL",
            Some("RECUR_WEBHOOKS__ENDPOINTS"),
        ),
    ];
    for (name, expected) in cases {
        let (variable, suggestion) = unknown_env(&[name]);
        assert_eq!(variable, name);
        assert_eq!(suggestion.as_deref(), expected, "{name}");
    }
    let message = ConfigError::UnknownEnv {
        variable: "RECUR_REDIS_URL".into(),
        suggestion: Some("RECUR_REDIS__URL".into()),
    }
    .to_string();
    assert_eq!(
        message,
        "unknown environment variable RECUR_REDIS_URL: did you mean RECUR_REDIS__URL? \
         (nested keys are joined with __)"
    );
    // Settings (in any case), whole tables, free-form tables, and what recur reads besides.
    let allowed = [
        "RECUR_REDIS__URL",
        "recur_redis__url",
        "RECUR_REDIS",
        "RECUR_PARTITIONS",
        "RECUR_CLUSTER__RENEW_INTERVAL",
        "RECUR_WEBHOOKS__ENDPOINTS",
        "RECUR_LIFECYCLE__DUNNING__RETRIES",
        "RECUR_STATUS_MANAGER__BACKOFFICE__ACTIVE",
        "RECUR_PROMO_CODES__WELCOME10__KIND",
        "RECUR_BENCH_AUTO_AOF_REWRITE",
        "RECUR_BENCH_ANYTHING_NEW",
        "RECUR_PROMTOOL",
        "RUST_LOG",
        "PATH",
    ];
    check_env(allowed.iter().map(|n| n.to_string())).expect("all allowed");
}

#[test]
fn an_environment_typo_stops_loading() {
    jailed(|jail| {
        jail.set_env("RECUR_REDIS_URL", "redis://127.0.0.1:6380");
        let error = load_err(&Overrides::default());
        assert!(
            error.to_string().contains("did you mean RECUR_REDIS__URL?"),
            "{error}"
        );
        Ok(())
    });
}

#[test]
fn unknown_keys_and_values_say_what_was_meant_without_nested_backticks() {
    jailed(|jail| {
        jail.create_file("typo.toml", "[redis]\nurll = \"redis://x\"\n")?;
        jail.create_file("mode.toml", "[clock]\nmode = \"simulate\"\n")?;
        let with = |file: &str| Overrides {
            config_file: Some(file.into()),
            ..Overrides::default()
        };
        let error = load_err(&with("typo.toml"));
        let message = error.to_string();
        assert!(message.contains("did you mean `url`?"), "{message}");
        assert!(message.contains("typo.toml"), "{message}");
        assert!(!message.contains("``"), "nested backticks: {message}");
        let message = load_err(&with("mode.toml")).to_string();
        assert!(message.contains("did you mean `simulated`?"), "{message}");
        assert!(!message.contains("``"), "nested backticks: {message}");
        Ok(())
    });
}

#[test]
fn bad_status_and_promo_entries_name_their_keys() {
    jailed(|jail| {
        jail.create_file(
            "bad-status.toml",
            "[status_manager.web]\nACTIVE = [\"FROZEN\"]\n",
        )?;
        jail.create_file(
            "bad-promo.toml",
            "[promo_codes.HALF]\nkind = \"percent\"\nvalue = \"150\"\n",
        )?;
        let with = |file: &str| Overrides {
            config_file: Some(file.into()),
            ..Overrides::default()
        };
        assert_invalid_key(
            load_err(&with("bad-status.toml")),
            "status_manager.web.ACTIVE",
        );
        assert_invalid_key(load_err(&with("bad-promo.toml")), "promo_codes.HALF.value");
        Ok(())
    });
}

#[test]
fn missing_or_broken_config_file_is_reported() {
    jailed(|jail| {
        let missing = Overrides {
            config_file: Some("nope.toml".into()),
            ..Overrides::default()
        };
        assert!(matches!(
            load_err(&missing),
            ConfigError::FileNotFound { .. }
        ));
        jail.create_file("broken.toml", "prefix = ")?;
        let broken = Overrides {
            config_file: Some("broken.toml".into()),
            ..Overrides::default()
        };
        let error = load_err(&broken);
        assert!(matches!(error, ConfigError::Unreadable { .. }), "{error:?}");
        assert!(error.to_string().contains("broken.toml"), "{error}");
        Ok(())
    });
}

#[test]
fn durations_parse() {
    let ms = Duration::from_millis;
    assert_eq!(parse_duration("500ms"), Ok(ms(500)));
    assert_eq!(parse_duration("30s"), Ok(ms(30_000)));
    assert_eq!(parse_duration("5m"), Ok(ms(300_000)));
    assert_eq!(parse_duration("24h"), Ok(ms(86_400_000)));
    assert_eq!(parse_duration("7d"), Ok(ms(7 * 86_400_000)));
    assert_eq!(parse_duration(" 1h30m "), Ok(ms(5_400_000)));
    assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    for bad in [
        "",
        "30",
        "s",
        "1x",
        "1.5h",
        "-1s",
        "1h 30m",
        "99999999999999999999d",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
    }
}

#[test]
fn config_becomes_basket_rules() {
    let mut s = Settings::defaults().unwrap();
    s.status_manager.insert(
        "backoffice".into(),
        [("ACTIVE".to_string(), vec!["PAUSED".to_string()])]
            .into_iter()
            .collect(),
    );
    s.promo_codes.insert(
        "WELCOME10".into(),
        PromoCode {
            kind: PromoKind::Percent,
            value: Decimal::TEN,
            first_cycles: Some(3),
            expires: None,
        },
    );
    let r = s.basket_rules();
    assert!(r
        .statuses
        .allows("backoffice", OrderStatus::Active, OrderStatus::Paused));
    assert!(!r
        .statuses
        .allows("backoffice", OrderStatus::Paused, OrderStatus::Active));
    let (code, p) = r.promotion("welcome10").unwrap();
    assert_eq!(code, "WELCOME10");
    assert_eq!(
        (p.kind, p.value, p.first_cycles),
        (DiscountKind::Percent, Decimal::TEN, Some(3))
    );
}
