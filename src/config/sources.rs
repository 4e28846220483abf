//! Where settings come from (the compiled-in defaults, a file, `RECUR_` environment variables,
//! flags), how unknown names are caught, and the deserializers of the settings' own formats.

use super::*;

/// The layers in precedence order, last wins.
pub(super) fn layers(overrides: &Overrides) -> Result<Figment, ConfigError> {
    check_env(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()))?;
    let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
    if let Some(path) = &overrides.config_file {
        if !path.is_file() {
            return Err(ConfigError::FileNotFound { path: path.clone() });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(env_layer());
    // Secrets as they are written: the environment layer reads values as TOML-like
    // (`123` a number, `1.50` the float 1.5), which would change a password.
    for (key, value) in raw_env_secrets() {
        figment = figment.merge(Serialized::default(&key, value));
    }
    if let Some(url) = &overrides.redis_url {
        figment = figment.merge(Serialized::default("redis.url", url));
    }
    if let Some(cluster) = overrides.redis_cluster {
        figment = figment.merge(Serialized::default("redis.cluster", cluster));
    }
    if let Some(prefix) = &overrides.prefix {
        figment = figment.merge(Serialized::default("prefix", prefix));
    }
    if let Some(mode) = overrides.clock_mode {
        figment = figment.merge(Serialized::default("clock.mode", mode));
    }
    if let Some(start) = &overrides.clock_start {
        figment = figment.merge(Serialized::default("clock.start", start));
    }
    if let Some(listen) = &overrides.http_listen {
        figment = figment.merge(Serialized::default("http.listen", listen));
    }
    Ok(figment)
}

/// Settings read from the environment as raw strings ([`raw_env_secrets`]), not by
/// [`env_layer`].
pub(super) const RAW_ENV_KEYS: [&str; 4] = [
    "redis.password",
    "redis.username",
    "redis.sentinel.password",
    "redis.sentinel.username",
];

/// `RECUR_SECTION__KEY=value`, limited to recur's own top-level keys.
pub(super) fn env_layer() -> Env {
    Env::prefixed(ENV_PREFIX).split(ENV_NESTING).filter(|key| {
        let top = key.as_str().split('.').next().unwrap_or_default();
        // Keys keep the variable's case here; Env lower-cases them later.
        TOP_LEVEL_KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
            && !RAW_ENV_KEYS
                .iter()
                .any(|k| k.eq_ignore_ascii_case(key.as_str()))
    })
}

/// Every setting's dotted key (`redis.embedded.data_dir`), tables included (`redis`), from the
/// built-in defaults.
pub(super) fn setting_keys() -> Vec<String> {
    pub(super) fn walk(prefix: &str, dict: &figment::value::Dict, keys: &mut Vec<String>) {
        for (key, value) in dict {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if let figment::value::Value::Dict(_, inner) = value {
                walk(&path, inner, keys);
            }
            keys.push(path);
        }
    }
    let mut keys: Vec<String> = KEYS_NOT_IN_DEFAULTS.iter().map(|k| k.to_string()).collect();
    // The defaults are compiled in and tested: they always parse.
    let defaults: figment::value::Dict = Figment::from(Toml::string(DEFAULT_TOML))
        .extract()
        .unwrap_or_default();
    walk("", &defaults, &mut keys);
    keys
}

/// The environment variable that sets `key` (`redis.url` → `RECUR_REDIS__URL`).
pub(super) fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', ENV_NESTING).to_ascii_uppercase()
    )
}

/// Refuses a `RECUR_` variable that names no setting (and is none of the variables recur reads
/// besides settings), naming the nearest one: `RECUR_REDIS_URL` would otherwise be ignored and
/// the daemon run on the embedded Redis.
///
/// # Errors
/// [`ConfigError::UnknownEnv`] for the first such variable (in name order).
pub fn check_env(names: impl IntoIterator<Item = String>) -> Result<(), ConfigError> {
    let mut names: Vec<String> = names
        .into_iter()
        .filter(|n| n.to_ascii_uppercase().starts_with(ENV_PREFIX))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    names.sort();
    let keys = setting_keys();
    let known: Vec<String> = keys.iter().map(|k| env_name(k)).collect();
    for name in names {
        let upper = name.to_ascii_uppercase();
        let other = ENV_OTHER_NAMES.contains(&upper.as_str())
            || ENV_OTHER_PREFIXES.iter().any(|p| upper.starts_with(p));
        let free_form = FREE_FORM_TABLES
            .iter()
            .any(|t| upper.starts_with(&format!("{}{ENV_NESTING}", env_name(t))));
        if other || free_form || known.contains(&upper) {
            continue;
        }
        let suggestion = nearest(&upper, known.iter().map(String::as_str))
            .filter(|(_, distance)| *distance <= upper.len().saturating_sub(ENV_PREFIX.len()) / 2)
            .map(|(s, _)| s.to_string());
        return Err(ConfigError::UnknownEnv {
            variable: name,
            suggestion,
        });
    }
    Ok(())
}

/// The candidate nearest to `word` (fewest single-character edits), with its distance.
pub(super) fn nearest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<(&'a str, usize)> {
    candidates
        .map(|c| (c, edit_distance(word, c)))
        .min_by_key(|(_, d)| *d)
}

/// Levenshtein distance.
pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// `a`, `a` or `b`, one of `a`, `b`, `c` (each once in backticks).
pub(super) fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => "nothing".to_string(),
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        all => format!("one of {}", all.join(", ")),
    }
}

/// figment's message for an error, without its nested backticks (`expected `one of `a``), and
/// with the nearest name for an unknown key or value.
pub(super) fn describe_kind(kind: &figment::error::Kind) -> String {
    use figment::error::Kind;
    let hint = |found: &str, expected: &[&str]| match nearest(found, expected.iter().copied()) {
        Some((near, d)) if d <= found.len().max(2) / 2 => format!(": did you mean `{near}`?"),
        _ => String::new(),
    };
    match kind {
        Kind::UnknownField(found, expected) => format!(
            "unknown key `{found}`{} (expected {})",
            hint(found, expected),
            one_of(expected)
        ),
        Kind::UnknownVariant(found, expected) => format!(
            "unknown value `{found}`{} (expected {})",
            hint(found, expected),
            one_of(expected)
        ),
        other => other.to_string(),
    }
}

/// `RECUR_REDIS__PASSWORD` and `RECUR_REDIS__USERNAME` as (key, the value unchanged).
pub(super) fn raw_env_secrets() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.to_str()?;
            let rest = name
                .get(..ENV_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                .map(|_| &name[ENV_PREFIX.len()..])?;
            let key = rest.replace(ENV_NESTING, ".").to_ascii_lowercase();
            RAW_ENV_KEYS
                .contains(&key.as_str())
                .then(|| (key, value.to_string_lossy().into_owned()))
        })
        .collect()
}

impl ConfigError {
    pub(super) fn from_figment(error: figment::Error) -> ConfigError {
        let origin = match &error.metadata {
            // Name the variable itself: RECUR_ + the key path joined by the nesting separator.
            Some(md) if md.name.contains("environment") && !error.path.is_empty() => format!(
                "environment variable {ENV_PREFIX}{}",
                error.path.join(ENV_NESTING).to_ascii_uppercase()
            ),
            Some(md) if md.name.ends_with("source string") => "the built-in defaults".to_string(),
            Some(md) => match &md.source {
                Some(figment::Source::File(path)) => format!("{} {}", md.name, path.display()),
                // Serialized overrides are the only providers defined in code.
                Some(figment::Source::Code(_)) | None => "the command line".to_string(),
                Some(source) => format!("{} {source}", md.name),
            },
            None => "the command line".to_string(),
        };
        let message = describe_kind(&error.kind);
        if error.path.is_empty() {
            ConfigError::Unreadable { origin, message }
        } else {
            ConfigError::Invalid {
                key: error.path.join("."),
                message: format!("{message} (from {origin})"),
            }
        }
    }
}

pub(super) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        message: message.into(),
    }
}

pub(super) fn humane_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

pub(super) fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    parse_duration(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

pub(super) fn empty_as_none<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(deserializer)?;
    Ok(Some(text).filter(|t| !t.trim().is_empty()))
}

pub(super) fn empty_as_none_path<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<PathBuf>, D::Error> {
    Ok(empty_as_none(deserializer)?.map(PathBuf::from))
}

/// A user name or password: any string, `None` when empty (spaces are kept: they may be part
/// of a password). Anything but a string is refused without repeating the value.
pub(super) fn secret_as_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    struct Secret;
    impl serde::de::Visitor<'_> for Secret {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()).filter(|v| !v.is_empty()))
        }
    }
    deserializer
        .deserialize_str(Secret)
        .map_err(|_: D::Error| serde::de::Error::custom("must be a string (quote it)"))
}

pub(super) fn empty_as_none_instant<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    let text = String::deserialize(deserializer)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not an RFC 3339 instant: {e}")))
}

pub(super) fn cron_schedule<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<cron::Schedule, D::Error> {
    let text = String::deserialize(deserializer)?;
    cron::Schedule::from_str(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{text}` is not a cron expression (sec min hour day month weekday): {e}"
        ))
    })
}
