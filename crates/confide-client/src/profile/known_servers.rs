//! `known_servers.json`: server address → pinned certificate fingerprint.
//!
//! Like SSH's known_hosts, but keyed by the address as typed (`HOST:PORT`). This file
//! only stores pins; it must not decide whether a presented certificate is trusted.

use super::{Profile, ProfileError, corrupt, read_json, write_json};
use crate::address::ServerAddress;
use crate::fingerprint::Fingerprint;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Default, Serialize, Deserialize)]
struct KnownServersFile {
    /// Address → fingerprint in display form.
    servers: BTreeMap<String, String>,
}

impl Profile {
    /// The fingerprint pinned for `server`, if any.
    ///
    /// # Errors
    /// A [`ProfileError`] if `known_servers.json` is unreadable or corrupt.
    pub fn known_server(
        &self,
        server: &ServerAddress,
    ) -> Result<Option<Fingerprint>, ProfileError> {
        let path = self.known_servers_path();
        let file = read_json::<KnownServersFile>(&path)?.unwrap_or_default();
        file.servers
            .get(&server.to_string())
            .map(|text| {
                text.parse::<Fingerprint>()
                    .map_err(|err| corrupt(&path, format!("entry for {server}: {err}")))
            })
            .transpose()
    }

    /// Pins `fingerprint` for `server`, replacing any earlier pin.
    ///
    /// # Errors
    /// A [`ProfileError`] if the file is corrupt or cannot be written.
    pub fn pin_server(
        &self,
        server: &ServerAddress,
        fingerprint: Fingerprint,
    ) -> Result<(), ProfileError> {
        let path = self.known_servers_path();
        let mut file = read_json::<KnownServersFile>(&path)?.unwrap_or_default();
        file.servers
            .insert(server.to_string(), fingerprint.to_string());
        write_json(&path, &file, 0o644)
    }

    /// Removes the pin for `server`; returns whether there was one.
    ///
    /// # Errors
    /// A [`ProfileError`] if the file is corrupt or cannot be written.
    pub fn forget_server(&self, server: &ServerAddress) -> Result<bool, ProfileError> {
        let path = self.known_servers_path();
        let Some(mut file) = read_json::<KnownServersFile>(&path)? else {
            return Ok(false);
        };
        let removed = file.servers.remove(&server.to_string()).is_some();
        if removed {
            write_json(&path, &file, 0o644)?;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_stored_per_address() {
        let temp = tempfile::tempdir().unwrap();
        let profile = Profile::open(temp.path()).unwrap();
        let one: ServerAddress = "127.0.0.1:5555".parse().unwrap();
        let two: ServerAddress = "Example.org:443".parse().unwrap();
        assert_eq!(profile.known_server(&one).unwrap(), None);
        profile.pin_server(&one, Fingerprint([1; 32])).unwrap();
        profile.pin_server(&two, Fingerprint([2; 32])).unwrap();
        assert_eq!(
            profile.known_server(&one).unwrap(),
            Some(Fingerprint([1; 32]))
        );
        let two_again: ServerAddress = "example.ORG:443".parse().unwrap();
        assert_eq!(
            profile.known_server(&two_again).unwrap(),
            Some(Fingerprint([2; 32]))
        );
        profile.pin_server(&one, Fingerprint([3; 32])).unwrap();
        assert_eq!(
            profile.known_server(&one).unwrap(),
            Some(Fingerprint([3; 32]))
        );
        assert!(profile.forget_server(&one).unwrap());
        assert!(!profile.forget_server(&one).unwrap());
        assert_eq!(profile.known_server(&one).unwrap(), None);

        let text = std::fs::read_to_string(profile.known_servers_path()).unwrap();
        assert!(text.contains("\"example.org:443\""), "{text}");
        assert!(text.contains(&Fingerprint([2; 32]).to_string()), "{text}");
    }

    #[test]
    fn corrupt_file_is_named_in_the_error() {
        let temp = tempfile::tempdir().unwrap();
        let profile = Profile::open(temp.path()).unwrap();
        let server: ServerAddress = "127.0.0.1:5555".parse().unwrap();
        std::fs::write(profile.known_servers_path(), "{not json").unwrap();
        let err = profile.known_server(&server).unwrap_err();
        assert!(matches!(err, ProfileError::Corrupt { .. }));
        let text = err.to_string();
        assert!(text.contains("known_servers.json"), "{text}");
        assert!(text.contains("corrupt"), "{text}");
        // A bad fingerprint in an otherwise valid file names the entry.
        std::fs::write(
            profile.known_servers_path(),
            r#"{"servers":{"127.0.0.1:5555":"XYZ"}}"#,
        )
        .unwrap();
        let text = profile.known_server(&server).unwrap_err().to_string();
        assert!(text.contains("entry for 127.0.0.1:5555"), "{text}");
        // Pinning again replaces the bad entry.
        assert!(profile.pin_server(&server, Fingerprint([0; 32])).is_ok());
    }
}
