//! Where `kiln login` keeps what it got: named profiles in one TOML file in
//! the user's config directory (`$XDG_CONFIG_HOME/kiln/profiles.toml`, else
//! `~/.config/kiln/profiles.toml`). The file holds bearer credentials, so it
//! is created mode 0600 in a 0700 directory and replaced whole by rename:
//! a crash never leaves half a file. Writers hold `profiles.lock`, so two
//! commands refreshing one session at once do not both spend its refresh
//! token (the server revokes a session whose used token comes back).

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ClientError;

/// The profile a verb uses unless `--profile` or `KILN_PROFILE` names another.
pub const DEFAULT_PROFILE: &str = "default";

/// Every profile, by name.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Profiles {
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// One server and the credential for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The server's base URL, without a trailing slash.
    pub url: String,
    pub credential: Credential,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credential {
    /// A password login: the access token, renewed through the refresh
    /// token when it is about to expire.
    Session {
        username: String,
        access_token: String,
        refresh_token: String,
        /// Unix seconds.
        access_expires_at: u64,
    },
    ApiKey {
        key: String,
    },
}

/// The profiles file and its lock.
#[derive(Debug, Clone)]
pub struct ProfileFile {
    dir: PathBuf,
}

/// Held while a command reads, changes and writes the profiles.
pub struct Locked {
    _lock: File,
}

impl ProfileFile {
    /// The file in the user's config directory.
    pub fn locate() -> Result<Self, ClientError> {
        let base = match std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from) {
            Some(dir) if dir.is_absolute() => dir,
            _ => std::env::var_os("HOME")
                .map(|home| PathBuf::from(home).join(".config"))
                .ok_or_else(|| {
                    ClientError::Profile(
                        "neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep logins".into(),
                    )
                })?,
        };
        Ok(Self::at(base.join("kiln")))
    }

    pub fn at(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("profiles.toml")
    }

    /// Waits for other commands' changes to finish.
    pub fn lock(&self) -> Result<Locked, ClientError> {
        self.make_dir()?;
        let path = self.dir.join("profiles.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error(&path, &e))?;
        file.lock().map_err(|e| io_error(&path, &e))?;
        Ok(Locked { _lock: file })
    }

    /// The profiles; none when the file does not exist yet.
    pub fn load(&self) -> Result<Profiles, ClientError> {
        let path = self.path();
        match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                ClientError::Profile(format!("{} is not a profiles file: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Profiles::default()),
            Err(e) => Err(io_error(&path, &e)),
        }
    }

    /// Replaces the file (under the lock, which `_locked` proves is held).
    pub fn save(&self, profiles: &Profiles, _locked: &Locked) -> Result<(), ClientError> {
        let text = toml::to_string(profiles)
            .map_err(|e| ClientError::Profile(format!("cannot encode the profiles: {e}")))?;
        let path = self.path();
        let temporary = self.dir.join("profiles.toml.new");
        let write = || -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&temporary)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temporary, &path)?;
            File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| io_error(&path, &e))
    }

    /// One profile, or the error that says how to make it.
    pub fn profile(&self, name: &str) -> Result<Profile, ClientError> {
        self.load()?
            .profiles
            .remove(name)
            .ok_or_else(|| ClientError::NotLoggedIn(name.to_owned()))
    }

    fn make_dir(&self) -> Result<(), ClientError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| io_error(&self.dir, &e))
    }
}

fn io_error(path: &Path, e: &std::io::Error) -> ClientError {
    ClientError::Profile(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn session(token: &str) -> Profile {
        Profile {
            url: "http://127.0.0.1:8080".into(),
            credential: Credential::Session {
                username: "admin".into(),
                access_token: token.into(),
                refresh_token: "r".into(),
                access_expires_at: 1,
            },
        }
    }

    #[test]
    fn profiles_round_trip_in_a_file_only_its_owner_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = ProfileFile::at(dir.path().join("kiln"));
        assert!(
            file.load().unwrap().profiles.is_empty(),
            "none before a login"
        );
        let mut profiles = Profiles::default();
        profiles.profiles.insert("default".into(), session("a"));
        let key = Profile {
            url: "https://kiln.example".into(),
            credential: Credential::ApiKey {
                key: "kiln_x".into(),
            },
        };
        profiles.profiles.insert("ci".into(), key.clone());
        let locked = file.lock().unwrap();
        file.save(&profiles, &locked).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file.path()), 0o600);
        assert_eq!(mode(&dir.path().join("kiln")), 0o700);
        assert_eq!(file.profile("default").unwrap(), session("a"));
        assert_eq!(file.profile("ci").unwrap(), key);
        assert!(matches!(
            file.profile("other"),
            Err(ClientError::NotLoggedIn(name)) if name == "other"
        ));
    }

    #[test]
    fn a_damaged_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = ProfileFile::at(dir.path().to_path_buf());
        std::fs::write(file.path(), "profiles = 3").unwrap();
        let error = file.load().unwrap_err().to_string();
        assert!(
            error.contains("profiles.toml is not a profiles file"),
            "{error}"
        );
    }
}
