//! Shared-key rooms interoperate with the original Python programs: keys and tokens made
//! by Confide work in Python's `cryptography.fernet.Fernet`, and the other way round.
//!
//! This runs a real Python: the one named by `CONFIDE_PYTHON`, or else the venv that
//! `scripts/python-venv.sh` makes in `target/pyvenv`. Without it the test fails, saying
//! so; it never skips.

use std::ffi::OsString;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use confide_crypto::shared_key::{
    PASSPHRASE_ITERATIONS, PASSPHRASE_MEMORY_KIB, PASSPHRASE_PARALLELISM, Salt, SharedKey,
};
use rand::Rng;
use tempfile::TempDir;

/// How long one Python run may take before it is killed.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(60);

/// Decrypts the token in file argv[2] with the key file argv[1], read exactly as the
/// original programs read it, and writes the plaintext to file argv[3].
const PY_DECRYPT: &str = r#"
import sys
from cryptography.fernet import Fernet
key = open(sys.argv[1], "rb").read()
token = open(sys.argv[2], "rb").read()
open(sys.argv[3], "wb").write(Fernet(key).decrypt(token))
"#;

/// Makes a key and encrypts the contents of file argv[3] with it, writing the key to file
/// argv[1] and the token to file argv[2].
const PY_GENERATE_AND_ENCRYPT: &str = r#"
import sys
from cryptography.fernet import Fernet
key = Fernet.generate_key()
token = Fernet(key).encrypt(open(sys.argv[3], "rb").read())
open(sys.argv[1], "wb").write(key)
open(sys.argv[2], "wb").write(token)
"#;

/// Derives a key from the passphrase in file argv[1] (UTF-8) and the salt in hex argv[2]
/// with Argon2id (memory KiB argv[3], iterations argv[4], lanes argv[5]) and writes it
/// to file argv[6] in the key file form.
const PY_ARGON2ID: &str = r#"
import base64, sys
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
passphrase = open(sys.argv[1], "rb").read()
kdf = Argon2id(salt=bytes.fromhex(sys.argv[2]), length=32, memory_cost=int(sys.argv[3]),
               iterations=int(sys.argv[4]), lanes=int(sys.argv[5]))
open(sys.argv[6], "wb").write(base64.urlsafe_b64encode(kdf.derive(passphrase)))
"#;

/// Encrypts the contents of file argv[2] under the key file argv[1] and writes the token
/// to file argv[3].
const PY_ENCRYPT: &str = r#"
import sys
from cryptography.fernet import Fernet
key = open(sys.argv[1], "rb").read()
open(sys.argv[3], "wb").write(Fernet(key).encrypt(open(sys.argv[2], "rb").read()))
"#;

/// A message with every byte value and some multi-byte UTF-8, long enough for several
/// AES blocks.
fn sample_plaintext() -> Vec<u8> {
    let mut plaintext = "Grüße from Confide 🔐, über alles: ".as_bytes().to_vec();
    plaintext.extend(0..=255_u8);
    plaintext
}

fn now_unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The interpreter to use: `CONFIDE_PYTHON`, or the venv of `scripts/python-venv.sh`.
fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("CONFIDE_PYTHON") {
        return PathBuf::from(python);
    }
    // CARGO_MANIFEST_DIR is <workspace root>/crates/confide-crypto.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap();
    root.join("target/pyvenv/bin/python")
}

/// Runs a Python script with arguments, within [`PYTHON_TIMEOUT`], and fails the test
/// with Python's output unless it exits successfully.
fn run_python(dir: &TempDir, script: &str, args: &[OsString]) {
    let python = python();
    let stdout_path = dir.path().join("python.stdout");
    let stderr_path = dir.path().join("python.stderr");
    let mut child = Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        // Files rather than pipes: a full pipe could block the child while we poll.
        .stdout(File::create(&stdout_path).unwrap())
        .stderr(File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap_or_else(|err| panic!("{}", missing_python(&python, &err.to_string())));

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > PYTHON_TIMEOUT {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("python did not finish within {PYTHON_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stderr = fs::read_to_string(&stderr_path).unwrap();
    if stderr.contains("No module named 'cryptography") {
        panic!(
            "{}",
            missing_python(&python, "cryptography>=44 is not installed")
        );
    }
    assert!(
        status.success(),
        "python failed ({status}):\n{}{stderr}",
        fs::read_to_string(&stdout_path).unwrap()
    );
}

/// The one-line failure when the Python side is not set up.
fn missing_python(python: &Path, why: &str) -> String {
    format!(
        "no usable Python at {} ({why}): run scripts/python-venv.sh, or set CONFIDE_PYTHON \
         to a python3 with cryptography>=44",
        python.display()
    )
}

fn arg(path: &Path) -> OsString {
    path.as_os_str().to_owned()
}

#[test]
fn python_decrypts_confide_key_and_token() {
    let dir = TempDir::new().unwrap();
    let mut rng = rand::rng();
    let key = SharedKey::generate(rng.random());
    let plaintext = sample_plaintext();
    let token = key.encrypt(&plaintext, now_unix_secs(), rng.random());

    let key_path = dir.path().join("room.key");
    let token_path = dir.path().join("token");
    let out_path = dir.path().join("plaintext");
    fs::write(&key_path, key.to_key_file().as_bytes()).unwrap();
    fs::write(&token_path, &token).unwrap();
    run_python(
        &dir,
        PY_DECRYPT,
        &[arg(&key_path), arg(&token_path), arg(&out_path)],
    );
    assert_eq!(fs::read(&out_path).unwrap(), plaintext);
}

#[test]
fn confide_decrypts_python_key_and_token() {
    let dir = TempDir::new().unwrap();
    let plaintext = sample_plaintext();
    let key_path = dir.path().join("room.key");
    let token_path = dir.path().join("token");
    let in_path = dir.path().join("plaintext");
    fs::write(&in_path, &plaintext).unwrap();
    let before = now_unix_secs();
    run_python(
        &dir,
        PY_GENERATE_AND_ENCRYPT,
        &[arg(&key_path), arg(&token_path), arg(&in_path)],
    );
    let after = now_unix_secs();

    let key = SharedKey::from_key_file(&fs::read_to_string(&key_path).unwrap()).unwrap();
    let token = fs::read_to_string(&token_path).unwrap();
    let (timestamp, decrypted) = key.decrypt_with_timestamp(&token).unwrap();
    assert_eq!(decrypted, plaintext);
    assert!(
        (before..=after).contains(&timestamp),
        "{before} <= {timestamp} <= {after}"
    );

    // And our key file for Python's key is the very text Python wrote, plus a newline.
    let python_key_text = fs::read_to_string(&key_path).unwrap();
    assert_eq!(*key.to_key_file(), format!("{python_key_text}\n"));
}

#[test]
fn passphrase_key_works_in_python() {
    let dir = TempDir::new().unwrap();
    let mut rng = rand::rng();
    let passphrase = "correct horse 🐴 battery staple, über-long";
    let salt_bytes: [u8; 16] = rng.random();
    let key = SharedKey::from_passphrase(passphrase, &Salt::generate(salt_bytes)).unwrap();
    let key_path = dir.path().join("room.key");
    fs::write(&key_path, key.to_key_file().as_bytes()).unwrap();

    // A Confide token under the passphrase key decrypts in Python...
    let plaintext = sample_plaintext();
    let token_path = dir.path().join("token");
    let out_path = dir.path().join("plaintext");
    let token = key.encrypt(&plaintext, now_unix_secs(), rng.random());
    fs::write(&token_path, &token).unwrap();
    run_python(
        &dir,
        PY_DECRYPT,
        &[arg(&key_path), arg(&token_path), arg(&out_path)],
    );
    assert_eq!(fs::read(&out_path).unwrap(), plaintext);

    // ...Python's reply under the same key file decrypts in Confide...
    let reply = b"and back again".to_vec();
    let reply_path = dir.path().join("reply");
    let reply_token_path = dir.path().join("reply.token");
    fs::write(&reply_path, &reply).unwrap();
    run_python(
        &dir,
        PY_ENCRYPT,
        &[arg(&key_path), arg(&reply_path), arg(&reply_token_path)],
    );
    let reply_token = fs::read_to_string(&reply_token_path).unwrap();
    assert_eq!(key.decrypt(&reply_token).unwrap(), reply);

    // ...and Python's own Argon2id, given the documented parameters, derives the same key.
    let passphrase_path = dir.path().join("passphrase");
    let python_key_path = dir.path().join("python.key");
    fs::write(&passphrase_path, passphrase).unwrap();
    let salt_hex: String = salt_bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    run_python(
        &dir,
        PY_ARGON2ID,
        &[
            arg(&passphrase_path),
            salt_hex.into(),
            PASSPHRASE_MEMORY_KIB.to_string().into(),
            PASSPHRASE_ITERATIONS.to_string().into(),
            PASSPHRASE_PARALLELISM.to_string().into(),
            arg(&python_key_path),
        ],
    );
    let python_key = SharedKey::from_key_file(&fs::read_to_string(&python_key_path).unwrap());
    assert_eq!(python_key.unwrap(), key);
}
