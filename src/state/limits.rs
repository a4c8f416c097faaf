//! [`Limits`]: the caps and budgets the shared state enforces, from the configuration, and
//! [`LimitsCell`], where SIGHUP replaces them whole.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::Config;
use crate::state::RateLimiter;

/// The limits of the shared state. Rates are indexed by side: 0 upload, 1 download.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Failed logins from one address within `ban_window` that ban it (0: never).
    pub ban_after: usize,
    /// See `ban_after`.
    pub ban_window: Duration,
    /// How long a ban lasts.
    pub ban_for: Duration,
    /// Password hashes one address may have running or queued (0: no limit).
    pub hashes_per_ip: usize,
    /// Control connections from one address.
    pub sessions_per_ip: usize,
    /// Logged-in sessions of one user (0: no limit).
    pub sessions_per_user: usize,
    /// Uploads and downloads of one user at once (0: no limit).
    pub transfers_per_user: usize,
    /// Bytes per second of one user's transfers together, per side (0: no limit).
    pub user_rates: [u64; 2],
    /// Bytes per second of the whole server, per side (0: no limit).
    pub global_rates: [u64; 2],
    /// The server's budgets for `global_rates`.
    pub global: [Option<Arc<RateLimiter>>; 2],
}

impl Limits {
    /// The limits `config` sets.
    pub fn new(config: &Config) -> Limits {
        let global_rates = [config.max_upload_rate, config.max_download_rate];
        Limits {
            ban_after: config.ban_after_failures,
            ban_window: Duration::from_secs(config.ban_window_secs),
            ban_for: Duration::from_secs(config.ban_secs),
            hashes_per_ip: config.max_password_checks_per_ip,
            sessions_per_ip: config.max_sessions_per_ip,
            sessions_per_user: config.max_sessions_per_user,
            transfers_per_user: config.max_transfers_per_user,
            user_rates: [
                config.max_upload_rate_per_user,
                config.max_download_rate_per_user,
            ],
            global_rates,
            global: global_rates.map(|rate| (rate > 0).then(|| Arc::new(RateLimiter::new(rate)))),
        }
    }

    /// The limits `config` sets, keeping this one's server budgets where their rate stays
    /// (the transfers sharing them go on sharing them).
    pub fn reloaded(&self, config: &Config) -> Limits {
        let mut next = Limits::new(config);
        for side in 0..2 {
            if next.global_rates[side] == self.global_rates[side] {
                next.global[side].clone_from(&self.global[side]);
            }
        }
        next
    }
}

/// The limits in force, replaced whole on reload.
#[derive(Debug)]
pub struct LimitsCell(RwLock<Arc<Limits>>);

impl LimitsCell {
    /// Starts with `limits`.
    pub fn new(limits: Limits) -> LimitsCell {
        LimitsCell(RwLock::new(Arc::new(limits)))
    }

    /// The limits now.
    pub fn get(&self) -> Arc<Limits> {
        Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts the limits of `config` in force; returns the old ones.
    pub fn reload(&self, config: &Config) -> Arc<Limits> {
        let mut slot = self.0.write().unwrap_or_else(|e| e.into_inner());
        let next = Arc::new(slot.reloaded(config));
        std::mem::replace(&mut *slot, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_keeps_the_server_budget_whose_rate_stays() {
        let config = Config {
            max_upload_rate: 1000,
            max_download_rate: 2000,
            ban_secs: 60,
            ..Config::default()
        };
        let cell = LimitsCell::new(Limits::new(&config));
        let before = cell.get();
        let changed = Config {
            max_download_rate: 3000,
            ban_secs: 120,
            ..config
        };
        cell.reload(&changed);
        let after = cell.get();
        assert_eq!(after.ban_for, Duration::from_secs(120));
        let same = |a: &Option<Arc<RateLimiter>>, b: &Option<Arc<RateLimiter>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        assert!(
            same(&before.global[0], &after.global[0]),
            "upload budget kept"
        );
        assert!(
            !same(&before.global[1], &after.global[1]),
            "download budget new"
        );
        assert_eq!(after.global_rates, [1000, 3000]);
        let off = Config {
            max_upload_rate: 0,
            ..changed
        };
        cell.reload(&off);
        assert!(cell.get().global[0].is_none());
    }
}
