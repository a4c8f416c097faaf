//! `ferryd who` and `ferryd kick ID`: the live sessions of a running server, through its
//! admin listener (`GET /sessions`, `DELETE /sessions/{id}`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use cli_table::Cell;

use super::AdminError;
use crate::config::Config;

/// How long one request to the admin listener may take.
const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// Where a running server's admin listener is, and its token.
#[derive(Debug, Clone)]
pub struct AdminTarget {
    /// `http://ADDR:PORT`.
    pub url: String,
    /// The bearer token, when the listener needs one.
    pub token: Option<String>,
}

impl AdminTarget {
    /// `admin` (`ADDR:PORT` or a URL) and `token_file`, each falling back to `admin_listen`
    /// and `admin_token_file` of `config`.
    ///
    /// # Errors
    /// Neither names a listener, or the token file cannot be read.
    pub fn new(
        admin: Option<&str>,
        token_file: Option<&Path>,
        config: &Config,
    ) -> Result<AdminTarget, AdminError> {
        let url = match (admin, config.admin_listen) {
            (Some(given), _) if given.starts_with("http://") => {
                given.trim_end_matches('/').to_owned()
            }
            (Some(given), _) => format!("http://{given}"),
            (None, Some(addr)) => format!("http://{addr}"),
            (None, None) => {
                return Err(AdminError::Io(std::io::Error::other(
                    "no admin listener: give --admin ADDR:PORT, or --config with admin_listen",
                )));
            }
        };
        let file: Option<PathBuf> = token_file
            .map(Path::to_path_buf)
            .or_else(|| config.admin_token_file.clone());
        let token = crate::wiring::admin_token(file.as_deref())?;
        Ok(AdminTarget { url, token })
    }

    /// Sends `method path` and returns the status and the body.
    fn request(&self, method: reqwest::Method, path: &str) -> Result<(u16, String), AdminError> {
        let url = format!("{}{path}", self.url);
        let token = self.token.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        crate::tls::install_process_provider();
        let answer = runtime.block_on(async move {
            let client = reqwest::Client::builder().timeout(REQUEST_LIMIT).build()?;
            let mut request = client.request(method, &url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await?;
            let status = response.status().as_u16();
            Ok::<_, reqwest::Error>((status, response.text().await?))
        });
        let (status, body) = answer.map_err(|e| {
            AdminError::Io(std::io::Error::other(format!(
                "admin listener {}: {e}",
                self.url
            )))
        })?;
        match status {
            401 => Err(AdminError::Io(std::io::Error::other(format!(
                "admin listener {}: the token is missing or wrong (--admin-token-file)",
                self.url
            )))),
            _ => Ok((status, body)),
        }
    }
}

/// `ferryd who`: the live sessions as a table.
///
/// # Errors
/// The listener cannot be reached, refuses, or answers something else than sessions.
pub fn who(target: &AdminTarget) -> Result<String, AdminError> {
    let (status, body) = target.request(reqwest::Method::GET, "/sessions")?;
    if status != 200 {
        return Err(AdminError::Io(std::io::Error::other(format!(
            "admin listener {}: {status} {}",
            target.url,
            body.trim()
        ))));
    }
    let sessions: Vec<SessionShown> = serde_json::from_str(&body).map_err(|e| {
        AdminError::Io(std::io::Error::other(format!(
            "admin listener {}: unreadable sessions: {e}",
            target.url
        )))
    })?;
    let rows: Vec<_> = sessions
        .into_iter()
        .map(|s| {
            let transfer = s.transfer.map_or_else(String::new, |t| {
                format!(
                    "{} {} {} B, {}/s",
                    t.kind,
                    t.path.unwrap_or_default(),
                    t.bytes,
                    human_rate(t.rate)
                )
            });
            vec![
                s.id.cell(),
                s.user.unwrap_or_default().cell(),
                s.peer.cell(),
                s.node.cell(),
                s.since.cell(),
                s.command.unwrap_or_default().cell(),
                transfer.cell(),
            ]
        })
        .collect();
    Ok(crate::table::render(
        &["id", "user", "peer", "node", "since", "command", "transfer"],
        rows,
    )?)
}

/// `ferryd kick ID`: ends session `id`.
///
/// # Errors
/// There is no such session, or the listener cannot be reached or refuses.
pub fn kick(target: &AdminTarget, id: u64) -> Result<(), AdminError> {
    let (status, body) = target.request(reqwest::Method::DELETE, &format!("/sessions/{id}"))?;
    match status {
        200 => Ok(()),
        404 => Err(AdminError::Io(std::io::Error::other(format!(
            "no session {id} (ferryd who lists them)"
        )))),
        _ => Err(AdminError::Io(std::io::Error::other(format!(
            "admin listener {}: {status} {}",
            target.url,
            body.trim()
        )))),
    }
}

/// `rate` bytes per second, in binary units.
fn human_rate(rate: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = rate;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A [`SessionView`](crate::admission::SessionView) as it arrives.
#[derive(serde::Deserialize)]
struct SessionShown {
    id: u64,
    user: Option<String>,
    peer: String,
    #[serde(default)]
    node: String,
    since: String,
    command: Option<String>,
    transfer: Option<TransferShown>,
}

#[derive(serde::Deserialize)]
struct TransferShown {
    kind: String,
    path: Option<String>,
    bytes: u64,
    rate: f64,
}
