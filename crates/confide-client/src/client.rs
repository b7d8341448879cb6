//! [`Client::connect`]: the first connection, then the actor that keeps it going.
//!
//! The first connection is made before `connect` returns, so that a script learns at
//! once whether the server is reachable, trusted and accepts the credentials. Here the
//! trust-on-first-use policy is applied (pin an unknown server, refuse a changed one),
//! and the session and saved room positions are loaded or stored. This module must not
//! read or write the socket after the handshake; the actor owns it from then on.

use crate::config::{Auth, ClientConfig};
use crate::connection::{Actor, Credentials, Login, Pin, Settings, Start, establish};
use crate::error::ClientError;
use crate::event::{ClientEvent, EventStream, TakenPositions};
use crate::handle::{Account, ClientHandle, ServerInfo};
use crate::keys::KeyStore;
use crate::profile::Session;
use crate::secure::{E2eError, Requester, Secure, SecureStart};
use crate::sequencer::RoomCursors;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// Commands from handles queued for the actor.
const COMMAND_QUEUE: usize = 256;

/// Entry point of the client core.
#[derive(Debug)]
pub struct Client {
    _private: (),
}

impl Client {
    /// The fingerprint of the certificate `server` presents, without logging in or
    /// pinning it: for a front end that asks before trusting a new server (then connects
    /// with [`ClientConfig::fingerprint`]). Bounded by `timeout`.
    ///
    /// # Errors
    /// [`ClientError::Connect`], [`ClientError::Tls`] or [`ClientError::ConnectTimeout`].
    pub async fn probe(
        server: &crate::ServerAddress,
        timeout: std::time::Duration,
    ) -> Result<crate::Fingerprint, ClientError> {
        tokio::time::timeout(timeout, crate::connection::probe(server))
            .await
            .map_err(|_| ClientError::ConnectTimeout {
                server: server.clone(),
                after: timeout,
            })?
    }

    /// Connects to the server, checks its certificate, logs in and starts the
    /// background connection actor.
    ///
    /// With `Auth::Register` or `Auth::Login` the new session is stored in the
    /// profile; with `Auth::Resume` the stored one is used. An unknown server is pinned
    /// (trust on first use) and reported by [`ServerInfo::newly_pinned`] and a first
    /// [`ClientEvent::ServerPinned`]. Must be called within a tokio runtime.
    ///
    /// # Errors
    /// Everything that can go wrong with the first connection, returned directly:
    /// [`ClientError::Connect`] (unreachable), [`ClientError::FingerprintChanged`] or
    /// [`ClientError::FingerprintMismatch`], [`ClientError::Rejected`] (version),
    /// [`ClientError::Server`] (for example `InvalidCredentials`, `RateLimited`,
    /// `UsernameTaken`), [`ClientError::NotLoggedIn`] and
    /// [`ClientError::SessionExpired`] for `Resume`, and profile errors.
    pub async fn connect(config: ClientConfig) -> Result<(ClientHandle, EventStream), ClientError> {
        let ClientConfig {
            server,
            profile,
            fingerprint,
            auth,
            sync,
            software,
            connect_timeout,
            request_timeout,
            request_attempts,
            keepalive_idle,
            dead_after,
            backoff,
            max_reconnect_attempts,
            sync_page,
            max_buffered,
        } = config;

        let (login, password, registering) = match auth {
            Auth::Register { username, password } => (
                Login::Register {
                    username,
                    password: password.clone(),
                },
                Some(password),
                true,
            ),
            Auth::Login { username, password } => (
                Login::Password {
                    username,
                    password: password.clone(),
                },
                Some(password),
                false,
            ),
            Auth::Resume => {
                let session = profile.session()?.ok_or(ClientError::NotLoggedIn)?;
                if session.server != server {
                    return Err(ClientError::NotLoggedInOn {
                        server,
                        session_server: session.server,
                    });
                }
                (
                    Login::Token {
                        token: session.token.clone(),
                        fallback: None,
                    },
                    None,
                    false,
                )
            }
        };

        let known = profile.known_server(&server)?;
        let pin = Pin {
            expected: fingerprint.or(known),
            explicit: fingerprint.is_some(),
            known_servers: profile.known_servers_path(),
        };
        let established = establish(&server, &pin, &software, &login, connect_timeout).await?;
        drop(login);

        let presented = established.fingerprint;
        let newly_pinned = known != Some(presented);
        if newly_pinned {
            profile.pin_server(&server, presented)?;
            tracing::info!(%server, fingerprint = %presented, "pinned server certificate");
        }
        let account = Account {
            user_id: established.user_id,
            username: established.username.clone(),
        };
        if password.is_some() {
            profile.save_session(&Session {
                server: server.clone(),
                username: account.username.clone(),
                user_id: account.user_id,
                token: established.token.clone(),
            })?;
        }
        if registering {
            // A new account has seen nothing, whatever an old account of the same
            // name on an earlier server at this address had.
            profile.save_cursors(&server, &account.username, &BTreeMap::new())?;
        }
        let saved = if sync {
            profile.load_cursors(&server, &account.username)?
        } else {
            BTreeMap::new()
        };
        let cursors = RoomCursors::with_positions(
            sync,
            max_buffered,
            saved.iter().map(|(room, seq)| (*room, *seq)),
        );
        let taken = Arc::new(TakenPositions::new(sync, saved));

        let server_info = ServerInfo {
            address: server.clone(),
            fingerprint: presented,
            newly_pinned,
            software: established.hello.software.clone(),
            max_body: established.hello.max_body,
        };
        // This device's keys and decrypted history, opened before anything arrives.
        let user = account.username.canonical();
        let keys = KeyStore::open(&profile, &server.to_string(), &user).map_err(E2eError::from)?;
        let (state, _) = keys.load_or_create(&user).map_err(E2eError::from)?;
        let store = keys.open_history()?;
        let device = confide_proto::DeviceId(state.device.id().device);

        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (upstream_tx, upstream_rx) = mpsc::unbounded_channel();
        let (secure_tx, secure_rx) = mpsc::channel(COMMAND_QUEUE);
        if newly_pinned {
            let _ = events_tx.send(ClientEvent::ServerPinned {
                server: server.clone(),
                fingerprint: presented,
            });
        }
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let credentials = Credentials {
            user_id: account.user_id,
            username: account.username.clone(),
            token: established.token.clone(),
            password,
        };
        let settings = Settings {
            server,
            profile: profile.clone(),
            software,
            fingerprint: presented,
            sync,
            connect_timeout,
            request_timeout,
            request_attempts: request_attempts.max(1),
            keepalive_idle,
            dead_after,
            backoff,
            max_reconnect_attempts,
            sync_page: sync_page.max(1),
            device,
        };
        let actor = Actor::new(Start {
            settings,
            credentials,
            commands: commands_rx,
            events: upstream_tx,
            taken: taken.clone(),
            cursors,
            established,
        });
        let secure = Secure::new(SecureStart {
            requests: Requester::new(&commands_tx),
            upstream: upstream_rx,
            commands: secure_rx,
            events: events_tx,
            keys,
            state,
            store,
            me: account.username.clone(),
        })?;
        tokio::spawn(actor.run());
        tokio::spawn(secure.run());
        let handle = ClientHandle::new(commands_tx, secure_tx, account, server_info, profile);
        // Others can add this device to their groups only once its keys are published;
        // a failure is reported as a warning event and by `keys_published`.
        let _ = handle.keys_published().await;
        Ok((handle, EventStream::new(events_rx, taken)))
    }
}
