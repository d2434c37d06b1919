//! The client configuration file (`$XDG_CONFIG_HOME/reef/config.toml`) and the
//! environment overrides (`REEF_SERVER`, `REEF_TOKEN`, `REEF_CA_FILE`) of DESIGN §5.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Control-plane member URLs, tried in order.
    #[serde(default, deserialize_with = "one_or_many")]
    pub server: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The cluster CA (PEM) to trust for `https://` servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from)
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => home().join(fallback),
    }
}

/// `$XDG_CONFIG_HOME/reef/config.toml`.
pub fn config_path() -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config")
        .join("reef")
        .join("config.toml")
}

/// `reef up`'s default data dir: `$XDG_DATA_HOME/reef`.
pub fn default_data_dir() -> PathBuf {
    xdg("XDG_DATA_HOME", ".local/share").join("reef")
}

/// Splits a comma-separated server list and adds `http://` where no scheme is given.
pub fn parse_servers(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            if s.contains("://") {
                s.trim_end_matches('/').to_string()
            } else {
                format!("http://{}", s.trim_end_matches('/'))
            }
        })
        .collect()
}

impl ClientConfig {
    /// The file (if any) with `REEF_SERVER` / `REEF_TOKEN` / `REEF_CA_FILE` applied on top.
    pub fn load() -> Result<ClientConfig, String> {
        let path = config_path();
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                format!("{}: invalid client config: {}", path.display(), e.message())
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ClientConfig::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if let Ok(servers) = std::env::var("REEF_SERVER") {
            config.server = parse_servers(&servers);
        }
        if let Ok(token) = std::env::var("REEF_TOKEN") {
            config.token = Some(token);
        }
        if let Ok(file) = std::env::var("REEF_CA_FILE") {
            config.ca = Some(
                std::fs::read_to_string(&file).map_err(|e| format!("REEF_CA_FILE {file}: {e}"))?,
            );
        }
        Ok(config)
    }

    /// Writes the config file with owner-only permissions (it holds a token).
    pub fn save(&self) -> std::io::Result<PathBuf> {
        let path = config_path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        write_private(&path, text.as_bytes())?;
        Ok(path)
    }
}

/// Writes a file only its owner can read (it holds a secret), atomically: the
/// permissions are set at creation, so the secret is never readable by others.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lists_are_normalised() {
        assert_eq!(
            parse_servers("127.0.0.1:7070, http://a:1/"),
            vec!["http://127.0.0.1:7070", "http://a:1"]
        );
    }

    #[test]
    fn server_may_be_one_string() {
        let c: ClientConfig = toml::from_str("server = \"http://x:1\"").expect("parses");
        assert_eq!(c.server, vec!["http://x:1"]);
    }
}
