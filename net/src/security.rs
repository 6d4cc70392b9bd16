//! CURVE security from one cluster secret (the ZeroMQ guide's Ironhouse).
//!
//! A cluster has one secret, a [`ClusterKey`] kept in a file. Every key
//! pair is derived from it: BLAKE2b keyed with the secret, over a role
//! label, gives a 32-byte X25519 secret key (any 32 bytes are one), and the
//! public key follows. All servers of the cluster (tracker, block servers)
//! use the *server* pair; all members use the *member* pair. A client
//! connects knowing the server's public key, so a server without the secret
//! cannot answer it; a server admits, through its ZAP handler, only a client
//! that proves it holds the member key, so a client without the secret is
//! refused at the handshake. Every frame after the handshake is encrypted
//! and authenticated.
//!
//! Room is left for more roles (a read-only key: another label, another
//! client pair the ZAP handler admits under another user id).

use std::io::{self, Write};
use std::path::Path;

use blake2::digest::{KeyInit, Mac};

/// The label of the key pair every server uses.
const SERVER: &[u8] = b"zync server v1";
/// The label of the key pair every member uses as a client.
const MEMBER: &[u8] = b"zync member v1";

/// The user id the ZAP handler gives a member's connection.
pub const MEMBER_USER_ID: &str = "member";

/// A cluster's shared secret. Never printed (its `Debug` shows nothing of it).
#[derive(Clone)]
pub struct ClusterKey {
    secret: [u8; 32],
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterKey(..)")
    }
}

/// A key file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or created.
    #[error("key file {path}: {source}{}", if source.kind() == io::ErrorKind::NotFound {
        " (make one with `zync-peer keygen FILE`)"
    } else {
        ""
    })]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The file does not hold a key.
    #[error("key file {0} does not hold a Zync cluster key (one line of 64 hex digits)")]
    Malformed(String),
}

/// An X25519 key pair, as libzmq's CURVE options take it (32 raw bytes each).
#[derive(Clone)]
pub struct KeyPair {
    /// The public key.
    pub public: [u8; 32],
    /// The secret key.
    pub secret: [u8; 32],
}

impl ClusterKey {
    /// A new random key.
    pub fn generate() -> ClusterKey {
        ClusterKey {
            secret: rand::random(),
        }
    }

    /// Reads the key in `path`.
    pub fn load(path: &Path) -> Result<ClusterKey, KeyError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: name.clone(),
            source,
        })?;
        let mut secret = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut secret)
            .map_err(|_| KeyError::Malformed(name.clone()))?;
        warn_if_shared(path, "cluster key file");
        Ok(ClusterKey { secret })
    }

    /// Writes a new random key to `path`, readable by its owner only (mode
    /// 0600), and returns it. Never replaces an existing file.
    pub fn write_new(path: &Path) -> Result<ClusterKey, KeyError> {
        use std::os::unix::fs::OpenOptionsExt;
        let io_err = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let key = ClusterKey::generate();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err)?;
        writeln!(f, "{}", hex::encode(key.secret)).map_err(io_err)?;
        f.sync_all().map_err(io_err)?;
        Ok(key)
    }

    fn pair(&self, label: &[u8]) -> KeyPair {
        // A 32-byte key is always valid for BLAKE2b (keys up to 64 bytes).
        let mut mac = <blake2::Blake2bMac<blake2::digest::consts::U32> as KeyInit>::new_from_slice(
            &self.secret,
        )
        .unwrap_or_else(|_| unreachable!("a 32-byte BLAKE2b key"));
        mac.update(label);
        let secret: [u8; 32] = mac.finalize().into_bytes().into();
        let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret));
        KeyPair {
            public: public.to_bytes(),
            secret,
        }
    }

    /// The key pair every server of the cluster uses.
    pub fn server(&self) -> KeyPair {
        self.pair(SERVER)
    }

    /// The key pair every member uses as a client.
    pub fn member(&self) -> KeyPair {
        self.pair(MEMBER)
    }
}

/// How a process takes part in a cluster, as every binary's command line
/// says it: with the cluster's key, or explicitly without one. Flatten it
/// into a binary's arguments; [`KeyArgs::context`] makes the socket
/// context to match.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct KeyArgs {
    /// The cluster key file, made once by `zync-peer keygen FILE` and
    /// copied to every machine: each tracker, peer, zync-web and CLI
    /// command of a cluster needs the same one.
    #[arg(long, global = true, env = "ZYNC_KEY_FILE", value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,
    /// Run without a cluster key: no authentication and no encryption, so
    /// anyone who can reach a port can read, change and delete every file.
    /// Only for a network you trust entirely.
    #[arg(long, global = true, env = "ZYNC_INSECURE", conflicts_with = "key")]
    pub insecure: bool,
}

/// Why a process has no socket context to take part with.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// Neither a key nor `--insecure` was given.
    #[error(
        "no cluster key: make one with `zync-peer keygen FILE`, copy it to every machine of the \
         cluster and give it with --key FILE (or ZYNC_KEY_FILE); --insecure runs without \
         authentication or encryption"
    )]
    NoKey,
    /// The key file is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The key is fine but the secured context could not be made.
    #[error("cannot secure the sockets: {0}")]
    Secure(#[from] crate::socket::SecureError),
}

impl KeyArgs {
    /// The socket context these arguments ask for: CURVE with the key, or
    /// plaintext with `--insecure` (logged as a warning, at every start).
    pub fn context(&self) -> Result<crate::Context, TrustError> {
        match (&self.key, self.insecure) {
            (Some(path), _) => {
                let key = ClusterKey::load(path)?;
                Ok(crate::Context::secured(&key)?)
            }
            (None, true) => {
                tracing::warn!(
                    "running with --insecure: no authentication, no encryption; anyone who can \
                     reach this process's ports can read, change and delete every file"
                );
                Ok(crate::Context::new())
            }
            (None, false) => Err(TrustError::NoKey),
        }
    }
}

/// Warns when other users of this machine may read the secret file at
/// `path` (`what` names it: "cluster key file", "web password file").
pub fn warn_if_shared(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(file = %path.display(), mode = %format!("{:o}", mode & 0o777),
                           "the {what} is readable by other users of this machine; `chmod 600` it");
        }
    }
}
