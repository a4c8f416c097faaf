//! What SIGHUP may change in a running server: [`LiveConfig`] (the configuration in force,
//! replaced whole) and [`Reload`], which splits a fresh configuration into the settings taken
//! at once and those that need a restart.

use std::sync::{Arc, RwLock};

use super::{Config, ConfigError};

/// The configuration in force, read whole where it is used and replaced whole by a reload,
/// so one command never sees half of an old and half of a new configuration.
#[derive(Debug, Clone)]
pub struct LiveConfig(Arc<RwLock<Arc<Config>>>);

impl LiveConfig {
    /// Starts with `config`.
    pub fn new(config: Config) -> LiveConfig {
        LiveConfig(Arc::new(RwLock::new(Arc::new(config))))
    }

    /// The configuration now.
    pub fn get(&self) -> Arc<Config> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn set(&self, config: Config) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
    }
}

/// Declares which settings a reload takes and which wait for a restart: every key of
/// [`Config`] is in exactly one list (a test checks it against what the file accepts).
macro_rules! groups {
    (reloaded: [$($live:ident),* $(,)?], restart: [$($fixed:ident),* $(,)?]) => {
        /// The settings a reload puts in force at once.
        pub const RELOADED: &[&str] = &[$(stringify!($live)),*];
        /// The settings that take effect at a restart only.
        pub const RESTART_ONLY: &[&str] = &[$(stringify!($fixed)),*];

        /// `base` with the reloaded settings of `fresh`; the names of the reloaded settings
        /// that changed, and of the restart-only ones that differ (left as in `base`).
        fn merge(base: &Config, fresh: &Config) -> (Config, Vec<&'static str>, Vec<&'static str>) {
            let mut next = base.clone();
            let mut taken = Vec::new();
            let mut waiting = Vec::new();
            $(
                if base.$live != fresh.$live {
                    next.$live = fresh.$live.clone();
                    taken.push(stringify!($live));
                }
            )*
            $(
                if base.$fixed != fresh.$fixed {
                    waiting.push(stringify!($fixed));
                }
            )*
            (next, taken, waiting)
        }
    };
}

groups! {
    reloaded: [
        registration, max_registrations_per_ip_per_hour, default_quota_bytes,
        default_quota_files, pbkdf2_iterations, min_password_length, require_tls_login,
        require_tls_data, require_tls_resumption, max_sessions_per_ip, max_line_length,
        max_login_failures, login_failure_delay_ms, ban_after_failures, ban_window_secs,
        ban_secs, max_password_checks_per_ip, max_sessions_per_user, max_transfers_per_user,
        max_upload_rate_per_user, max_download_rate_per_user, max_upload_rate,
        max_download_rate, login_timeout_secs, idle_timeout_secs, data_timeout_secs,
        max_bad_commands, shutdown_grace_secs,
    ],
    restart: [
        listen, data_dir, passive_ports, passive_address, anonymous_root, tls_cert, tls_key,
        implicit_tls_listen, max_sessions, max_path_depth, max_path_length,
        keep_partial_uploads, workers, blocking_threads, max_listing_entries,
        long_job_threads, long_jobs_per_user, transfer_threads, audit_max_bytes, audit_keep,
        audit_min_free_bytes, log_burst_per_address, log_burst_total, storage, s3_bucket,
        s3_prefix, s3_endpoint, s3_region, s3_allow_http, s3_access_key_id,
        s3_secret_access_key, s3_max_rename_objects, s3_rewrite_max_bytes, database_url,
        database_password_file, database_pool_size, node_name, cluster_lease_secs,
        shared_local_storage, proxy_protocol_from, admin_listen, admin_token_file,
    ]
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reload {
    /// The reloaded settings whose value changed, now in force.
    pub taken: Vec<&'static str>,
    /// The restart-only settings whose value differs in the file, left as they are.
    pub waiting: Vec<&'static str>,
}

impl LiveConfig {
    /// Puts the reloaded settings of `fresh` (a validated configuration) in force; the
    /// configuration now in force, and what changed.
    ///
    /// # Errors
    /// What `fresh` asks for does not hold with the restart-only settings in force (e.g.
    /// `require_tls_login` on a server started without a certificate); nothing changes then.
    pub fn reload(&self, fresh: &Config) -> Result<(Arc<Config>, Reload), ConfigError> {
        let (next, taken, waiting) = merge(&self.get(), fresh);
        next.validate().map_err(|e| match e {
            ConfigError::Invalid(why) => ConfigError::Invalid(format!(
                "{why} (with the settings that need a restart as they are now)"
            )),
            other => other,
        })?;
        self.set(next);
        Ok((self.get(), Reload { taken, waiting }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Registration;

    /// Every key the configuration file accepts, from serde's answer to an unknown one.
    fn accepted_keys() -> Vec<String> {
        let error = toml::from_str::<Config>("not_a_setting_at_all = 1")
            .expect_err("an unknown key is refused")
            .to_string();
        let list = error
            .split("expected one of ")
            .nth(1)
            .unwrap_or_else(|| panic!("no key list in {error}"));
        list.split(',')
            .filter_map(|item| item.split('`').nth(1))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn every_setting_is_either_reloaded_or_restart_only() {
        let mut grouped: Vec<&str> = RELOADED.iter().chain(RESTART_ONLY).copied().collect();
        grouped.sort_unstable();
        let before = grouped.len();
        grouped.dedup();
        assert_eq!(before, grouped.len(), "a setting is in both lists");
        let mut keys = accepted_keys();
        keys.sort();
        assert_eq!(keys, grouped);
    }

    #[test]
    fn a_reload_takes_the_reloaded_and_names_the_rest() {
        let settings = LiveConfig::new(Config::default());
        let fresh = Config {
            registration: Registration::Closed,
            idle_timeout_secs: 7,
            data_dir: "/elsewhere".into(),
            ..Config::default()
        };
        let (now, reload) = settings.reload(&fresh).expect("valid");
        assert_eq!(reload.taken, ["registration", "idle_timeout_secs"]);
        assert_eq!(reload.waiting, ["data_dir"]);
        assert_eq!(now.registration, Registration::Closed);
        assert_eq!(now.idle_timeout_secs, 7);
        assert_eq!(now.data_dir, Config::default().data_dir);
        let (_, again) = settings.reload(&fresh).expect("valid");
        assert!(again.taken.is_empty(), "{again:?}");
        assert_eq!(again.waiting, ["data_dir"]);
    }

    #[test]
    fn a_reload_that_needs_what_only_a_restart_gives_changes_nothing() {
        let settings = LiveConfig::new(Config::default());
        // The file gained a certificate and requires TLS: the certificate needs a restart,
        // so requiring TLS now would lock everyone out.
        let fresh = Config {
            tls_cert: Some("/etc/cert.pem".into()),
            tls_key: Some("/etc/key.pem".into()),
            require_tls_login: true,
            idle_timeout_secs: 9,
            ..Config::default()
        };
        fresh.validate().expect("the file alone is valid");
        let refused = settings.reload(&fresh).expect_err("refused");
        assert!(refused.to_string().contains("need a restart"), "{refused}");
        assert!(!settings.get().require_tls_login);
        assert_eq!(
            settings.get().idle_timeout_secs,
            Config::default().idle_timeout_secs
        );
    }
}
