//! `verify`: safety numbers with another user; `keygen`: a key file for shared-key rooms, in the Fernet format of the original
//! programs (Python's `cryptography.fernet.Fernet` reads it as is).

use super::{Context, print_out};
use crate::cli::{KeygenArgs, VerifyArgs};
use anyhow::Context as _;
use confide_crypto::shared_key::SharedKey;
use rand::RngCore;
use std::io::Write;

/// Writes a fresh shared key to `--out` (0600), refusing to replace an existing file
/// unless `--force` is given.
///
/// # Errors
/// If the file exists (without `--force`) or cannot be written.
pub fn keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let mut random = [0u8; 32];
    rand::rng().fill_bytes(&mut random);
    let key = SharedKey::generate(random);
    zeroize::Zeroize::zeroize(&mut random);
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if args.force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let path = &args.out;
    let mut file = options.open(path).map_err(|err| {
        if err.kind() == std::io::ErrorKind::AlreadyExists {
            anyhow::anyhow!(
                "{} already exists; pass --force to replace it (anyone holding the old key \
                 can still read what it encrypted)",
                path.display()
            )
        } else {
            anyhow::Error::new(err).context(format!("cannot create {}", path.display()))
        }
    })?;
    file.write_all(key.to_key_file().as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "wrote a shared key to {} (fingerprint {}).\nShared-key rooms are weaker than the \
         default end-to-end encrypted rooms: no forward secrecy, and anyone who ever holds \
         this file can read every message. Share it only over a channel you trust.",
        path.display(),
        key.fingerprint()
    );
    Ok(())
}

/// `confide verify USER [--confirm]`.
///
/// # Errors
/// If not logged in, the user never set up encryption, or their identity is invalid.
pub async fn verify(context: &Context, args: VerifyArgs) -> anyhow::Result<()> {
    let (client, _events) = context.connect(false).await?;
    let result = async {
        // The safety number is made from both published identities: wait until this
        // device's is (the client publishes it as it starts).
        client.keys_published().await?;
        let shown = client.verification(&args.user).await?;
        let mut key_changed = shown.key_changed;
        let mut verified = shown.verified;
        if args.confirm {
            verified = client.mark_verified(&args.user).await?;
            key_changed = false;
        }
        anyhow::Ok((shown.safety_number, verified, key_changed))
    }
    .await;
    client.close().await;
    let (number, verified, key_changed) = result?;
    if context.json {
        let emoji: Vec<serde_json::Value> = number
            .emoji_with_names()
            .into_iter()
            .map(|(symbol, name)| serde_json::json!({"emoji": symbol, "name": name}))
            .collect();
        print_out(
            serde_json::json!({
                "user": args.user.to_string(),
                "safety_number": number.to_string(),
                "emoji": emoji,
                "verified": verified,
                "key_changed": key_changed,
            })
            .to_string(),
        )?;
        return Ok(());
    }
    if key_changed {
        print_out(format!(
            "WARNING: {}'s identity key changed since you last saw it. They may have \
             reinstalled, or someone may be impersonating them. Compare again.",
            args.user
        ))?;
    }
    let groups: Vec<String> = number.groups().iter().map(|g| format!("{g:05}")).collect();
    print_out(format!("safety number with {}:", args.user))?;
    for line in groups.chunks(4) {
        print_out(format!("  {}", line.join(" ")))?;
    }
    let emoji: Vec<String> = number
        .emoji_with_names()
        .into_iter()
        .map(|(symbol, name)| format!("{symbol} {name}"))
        .collect();
    print_out(format!("emoji: {}", emoji.join("  ")))?;
    print_out(if verified {
        format!("{} is verified", args.user)
    } else {
        format!(
            "{} is not verified: compare these with them in person or over a channel you \
             trust, then run `confide verify {} --confirm`",
            args.user, args.user
        )
    })?;
    Ok(())
}
