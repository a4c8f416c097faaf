//! Accounts: the [`AccountRegistry`] actor (register, authenticate, change password), its
//! messages, the [`AccountStore`] backend trait with its JSON-file implementation, and
//! [`AuthError`].
//!
//! PBKDF2 is CPU-heavy, so the registry runs on a `SyncArbiter`, never on a session thread.
//! Account names are validated by [`UserName`] before they can touch a path.
//!
//! Every failed check costs the same work, whatever the name: unknown names are hashed with,
//! and wrong passwords of accounts with fewer rounds are padded up to, the highest round
//! count among the setting and the stored accounts; a successful login re-hashes a password
//! stored with another count. A name stays taken while a deleted account's files remain
//! ([`Remains`]), so registration never hands a home or a usage ledger to a stranger.
//!
//! The store, password hashing, the name rule and [`AuthError`] are in [`crate::accounts`]
//! (the rule shared with the client); the actor is here.

pub use crate::accounts::{
    AccountLimits, AccountRecord, AccountStore, AuthError, JsonAccountStore, NAME_RULE,
    RESERVED_NAMES, Remains, UserName, check_password, hash_password, hash_rounds, verify_password,
};

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use actix::{Actor, Addr, Handler, Message, SyncArbiter, SyncContext};

use crate::accounts::invites::{InviteError, InviteStore};
use crate::accounts::{Changed, modify};
use crate::codec::Password;
use crate::config::{Config, Quota, Registration};
use crate::state::SharedState;

/// What a session gets after a successful login or registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The logged-in account.
    pub name: UserName,
    /// Writes are refused.
    pub read_only: bool,
}

/// Account policy for the registry.
#[derive(Debug, Clone)]
pub struct RegistrySettings {
    /// PBKDF2 rounds for new hashes (and at least what a failed check of any name costs).
    pub iterations: u32,
    /// Shortest password accepted, in characters.
    pub min_password_length: usize,
    /// Whether [`Register`] is accepted, and whether it needs an invitation code.
    pub registration: Registration,
    /// Limits given to new accounts.
    pub default_quota: Quota,
    /// Registrations one client address may make within an hour.
    pub max_registrations_per_ip_per_hour: u32,
    /// Where invitation codes live (needed for [`Registration::Invite`]).
    pub invites: Option<Arc<dyn InviteStore>>,
    /// Files of deleted accounts, which keep their names taken.
    pub remains: Remains,
    /// Where registrations per address are counted (shared by the nodes of a cluster).
    pub state: Arc<dyn SharedState>,
}

/// State shared by every registry thread.
struct Shared {
    store: Arc<dyn AccountStore>,
    /// Replaced by [`Reconfigure`].
    settings: RwLock<RegistrySettings>,
    /// Rounds every failed check costs: the highest of the setting and of every account seen
    /// (at start and on each load since), so no failure reveals whether the name exists.
    rounds: AtomicU32,
}

impl Shared {
    /// The settings now (a copy: a reload never changes them under a running request).
    fn settings(&self) -> RegistrySettings {
        self.settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Puts the account settings of a reloaded configuration in force for every registry thread:
/// the registration mode and hourly cap, the default quota, the password rule and the hash
/// rounds.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Reconfigure(pub Arc<Config>);

impl Handler<Reconfigure> for AccountRegistry {
    type Result = ();

    fn handle(&mut self, Reconfigure(config): Reconfigure, _: &mut Self::Context) {
        let mut settings = self
            .shared
            .settings
            .write()
            .unwrap_or_else(|e| e.into_inner());
        settings.iterations = config.pbkdf2_iterations;
        settings.min_password_length = config.min_password_length;
        settings.registration = config.registration;
        settings.default_quota = config.default_quota();
        settings.max_registrations_per_ip_per_hour = config.max_registrations_per_ip_per_hour;
        // A failed check must keep costing what the most expensive account's check costs.
        self.shared
            .rounds
            .fetch_max(config.pbkdf2_iterations.max(1), Ordering::Relaxed);
    }
}

/// Registers and authenticates accounts. Runs on a `SyncArbiter` with several threads, so one
/// login never waits for another's hashing and no session thread ever hashes.
pub struct AccountRegistry {
    shared: Arc<Shared>,
}

impl Actor for AccountRegistry {
    type Context = SyncContext<Self>;
}

impl AccountRegistry {
    /// Starts `threads` registry threads over `store`. Must be called inside a running actix
    /// `System`. Reads every account once first, for the highest round count stored (on a
    /// blocking thread: the store may be a database).
    pub async fn start(
        store: Arc<dyn AccountStore>,
        settings: RegistrySettings,
        threads: usize,
    ) -> Addr<AccountRegistry> {
        let listing = Arc::clone(&store);
        let listed = tokio::task::spawn_blocking(move || listing.list())
            .await
            .map_err(|e| e.to_string())
            .and_then(|listed| listed.map_err(|e| e.to_string()));
        let stored = match listed {
            Ok(records) => records
                .iter()
                .filter_map(|r| hash_rounds(&r.hash))
                .max()
                .unwrap_or(0),
            Err(e) => {
                log::warn!("cannot read the accounts' round counts: {e}");
                0
            }
        };
        let rounds = AtomicU32::new(stored.max(settings.iterations).max(1));
        let shared = Arc::new(Shared {
            store,
            settings: RwLock::new(settings),
            rounds,
        });
        SyncArbiter::start(threads.max(1), move || AccountRegistry {
            shared: Arc::clone(&shared),
        })
    }

    /// Verifies `password` for `name`; every failure costs the same rounds (`Shared::rounds`).
    fn check(&self, name: &str, password: &Password) -> Result<AccountRecord, AuthError> {
        let record = match UserName::parse(name) {
            Ok(name) => self.shared.store.load(&name)?,
            Err(_) => None,
        };
        let rounds = record.as_ref().and_then(|r| hash_rounds(&r.hash));
        let most = self
            .shared
            .rounds
            .fetch_max(rounds.unwrap_or(0), Ordering::Relaxed)
            .max(rounds.unwrap_or(0));
        match record {
            Some(record) if verify_password(&record.hash, password) && !record.disabled => {
                Ok(self.rehashed(record, password, rounds))
            }
            _ => {
                // The rest of the work a check by the highest count would have cost; the
                // whole of it for an unknown name. The result is thrown away.
                let rest = most.saturating_sub(rounds.unwrap_or(0));
                if rest > 0 {
                    let _ = hash_password(password, rest);
                }
                Err(AuthError::WrongCredentials)
            }
        }
    }

    /// A record whose hash has another round count than the setting, hashed again with the
    /// setting now that the password is known; the old hash stays if storing fails.
    fn rehashed(
        &self,
        record: AccountRecord,
        password: &Password,
        rounds: Option<u32>,
    ) -> AccountRecord {
        let wanted = self.shared.settings().iterations;
        if rounds == Some(wanted) {
            return record;
        }
        // Stored only over the hash it replaces: a SITE PASSWD made meanwhile (on any node)
        // stays, and a disable or quota change made meanwhile is kept.
        let stored = hash_password(password, wanted).and_then(|hash| {
            modify(&*self.shared.store, &record.name, |now| {
                if now.hash != record.hash {
                    return Err(Changed::of(&record.name));
                }
                now.hash.clone_from(&hash);
                Ok(())
            })
        });
        match stored {
            Ok(Some(now)) => now,
            Ok(None) => record,
            Err(e) => {
                log::warn!("cannot re-hash the password of {}: {e}", record.name);
                record
            }
        }
    }
}

/// Creates an account (`SITE REGISTER`); the session is logged in as it on success.
#[derive(Debug, Message)]
#[rtype(result = "Result<Account, AuthError>")]
pub struct Register {
    /// Requested name, not yet validated.
    pub name: String,
    /// Requested password.
    pub password: Password,
    /// The invitation code (needed when registration is by invitation).
    pub code: Option<String>,
    /// The client's address, for the hourly cap per address.
    pub peer: IpAddr,
}

impl Handler<Register> for AccountRegistry {
    type Result = Result<Account, AuthError>;

    fn handle(&mut self, msg: Register, _: &mut Self::Context) -> Self::Result {
        let settings = &self.shared.settings();
        let invites = match (settings.registration, &settings.invites) {
            (Registration::Closed, _) | (Registration::Invite, None) => {
                return Err(AuthError::RegistrationClosed);
            }
            (Registration::Open, _) => None,
            (Registration::Invite, Some(invites)) => {
                let code = msg.code.as_deref().ok_or(AuthError::InviteRequired)?;
                Some((invites, code))
            }
        };
        let name = UserName::parse(&msg.name)?;
        check_password(&msg.password, settings.min_password_length)?;
        let now = Instant::now();
        let max = settings.max_registrations_per_ip_per_hour;
        let taken = settings
            .state
            .take_registration(msg.peer, now, max)
            .map_err(|e| AuthError::Io(io::Error::other(e)))?;
        if !taken {
            return Err(AuthError::TooManyRegistrations);
        }
        let created = self.create(name, &msg.password, invites);
        if created.is_err() {
            settings.state.give_back_registration(msg.peer, now);
        }
        created
    }
}

impl AccountRegistry {
    /// The part of [`Register`] after the cheap checks: spend the code, hash, store.
    fn create(
        &self,
        name: UserName,
        password: &Password,
        invite: Option<(&Arc<dyn InviteStore>, &str)>,
    ) -> Result<Account, AuthError> {
        let settings = &self.shared.settings();
        // In invite mode the code is checked first: without a valid one, nobody learns
        // whether a name is taken (same reply, same cost).
        if let Some((invites, code)) = invite {
            invites.redeem(code).map_err(|e| match e {
                InviteError::Invalid => AuthError::BadInvite,
                InviteError::Io(e) => AuthError::Io(e),
            })?;
        }
        let refund = || {
            if let Some((invites, code)) = invite {
                invites.refund(code);
            }
        };
        // Cheap early refusal; create() still decides races between registrations atomically.
        let free = match self.shared.store.load(&name) {
            Ok(None) => self.shared.settings().remains.of(&name).map(|left| {
                if !left.is_empty() {
                    log::info!("{name} not registered: a deleted account's files remain");
                }
                left.is_empty()
            }),
            Ok(Some(_)) => Ok(false),
            Err(AuthError::Io(e)) => Err(e),
            // A corrupt record still holds its name.
            Err(_) => Ok(false),
        };
        match free {
            Ok(true) => {}
            Ok(false) => {
                refund();
                return Err(AuthError::NameTaken);
            }
            Err(e) => {
                refund();
                return Err(e.into());
            }
        }
        let mut record = match hash_password(password, settings.iterations) {
            Ok(hash) => AccountRecord::new(name.clone(), hash),
            Err(e) => {
                refund();
                return Err(e);
            }
        };
        record.quota = settings.default_quota;
        if let Err(e) = self.shared.store.create(&record) {
            refund();
            return Err(e);
        }
        Ok(Account {
            name,
            read_only: false,
        })
    }
}

/// Checks a login (`USER` + `PASS`).
#[derive(Debug, Message)]
#[rtype(result = "Result<Account, AuthError>")]
pub struct Authenticate {
    /// Name as the client sent it, not yet validated.
    pub name: String,
    /// Password as the client sent it.
    pub password: Password,
}

impl Handler<Authenticate> for AccountRegistry {
    type Result = Result<Account, AuthError>;

    fn handle(&mut self, msg: Authenticate, _: &mut Self::Context) -> Self::Result {
        self.check(&msg.name, &msg.password).map(|record| Account {
            name: record.name,
            read_only: record.read_only,
        })
    }
}

/// Changes a logged-in user's password (`SITE PASSWD`); the old one must be given again.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), AuthError>")]
pub struct ChangePassword {
    /// The account.
    pub name: UserName,
    /// Current password.
    pub old: Password,
    /// New password; must pass the password rule.
    pub new: Password,
}

impl Handler<ChangePassword> for AccountRegistry {
    type Result = Result<(), AuthError>;

    fn handle(&mut self, msg: ChangePassword, _: &mut Self::Context) -> Self::Result {
        let record = self.check(msg.name.as_str(), &msg.old)?;
        let settings = &self.shared.settings();
        check_password(&msg.new, settings.min_password_length)?;
        let hash = hash_password(&msg.new, settings.iterations)?;
        // Only over the hash the old password was checked against (another node's SITE
        // PASSWD since then wins), keeping whatever else changed meanwhile.
        let stored = modify(&*self.shared.store, &record.name, |now| {
            if now.hash != record.hash {
                return Err(Changed::of(&record.name));
            }
            now.hash.clone_from(&hash);
            Ok(())
        })?;
        stored.map(drop).ok_or(AuthError::WrongCredentials)
    }
}

#[cfg(test)]
mod tests;
