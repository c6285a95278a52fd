//! Authentication and tenancy of the pushes: HTTP basic auth from
//! `--pyroscope-user` and a password read from a file or the environment
//! (never from the command line, where `ps` shows it), and the tenant
//! header of multi-tenant backends (`--pyroscope-tenant`).

use std::fmt;
use std::path::Path;

use base64::Engine as _;

/// The environment variable that may hold the password.
pub const PASSWORD_ENV: &str = "NETLENS_PYROSCOPE_PASSWORD";
/// The header multi-tenant Pyroscope (and Grafana's other backends) read
/// the tenant from.
pub const TENANT_HEADER: &str = "X-Scope-OrgID";
/// Longest tenant ID Grafana's backends accept.
const MAX_TENANT_LEN: usize = 150;

/// A secret that never shows in `{:?}` or `{}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What the pushes carry besides the profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// User and password of HTTP basic auth.
    pub basic: Option<(String, Secret)>,
    /// `X-Scope-OrgID`.
    pub tenant: Option<String>,
}

/// The pyroscope options as given, before they are checked.
#[derive(Clone, Debug, Default)]
pub struct AccessOptions<'a> {
    pub user: Option<&'a str>,
    pub password_file: Option<&'a Path>,
    pub tenant: Option<&'a str>,
}

impl Access {
    /// Checks the options and reads the password: from `password_file`,
    /// else from `env_password` (the value of [`PASSWORD_ENV`]). Errors
    /// name the option at fault and never contain the password.
    pub fn from_options(
        opts: &AccessOptions,
        env_password: Option<String>,
    ) -> Result<Access, String> {
        let password = match opts.password_file {
            Some(path) => Some(read_password_file(path)?),
            None => match env_password {
                Some(p) if p.is_empty() => {
                    return Err(format!("{PASSWORD_ENV} is set but empty"));
                }
                p => p.map(Secret),
            },
        };
        let basic = match (opts.user, password) {
            (None, None) => None,
            (Some(user), Some(password)) => Some((check_user(user)?, password)),
            (Some(_), None) => {
                return Err(format!(
                    "--pyroscope-user needs a password: --pyroscope-password-file FILE or the \
                     environment variable {PASSWORD_ENV}"
                ))
            }
            (None, Some(_)) => {
                return Err(format!(
                    "a Pyroscope password is given ({}) but no --pyroscope-user",
                    if opts.password_file.is_some() {
                        "--pyroscope-password-file".to_string()
                    } else {
                        PASSWORD_ENV.to_string()
                    }
                ))
            }
        };
        let tenant = opts.tenant.map(check_tenant).transpose()?;
        Ok(Access { basic, tenant })
    }

    /// The headers of every push: `Authorization: Basic ...` and the tenant.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if let Some((user, password)) = &self.basic {
            let token = base64::engine::general_purpose::STANDARD
                .encode(format!("{user}:{}", password.expose()));
            headers.push(("Authorization", format!("Basic {token}")));
        }
        if let Some(tenant) = &self.tenant {
            headers.push((TENANT_HEADER, tenant.clone()));
        }
        headers
    }
}

/// The value of [`PASSWORD_ENV`], if set.
pub fn env_password() -> Result<Option<String>, String> {
    match std::env::var(PASSWORD_ENV) {
        Ok(p) => Ok(Some(p)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(format!("{PASSWORD_ENV} is not valid UTF-8")),
    }
}

/// The whole file, less one trailing line end (`echo TOKEN > FILE`).
fn read_password_file(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "--pyroscope-password-file {}: cannot read it: {e}",
            path.display()
        )
    })?;
    let password = text
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&text);
    if password.is_empty() {
        return Err(format!(
            "--pyroscope-password-file {}: the file is empty",
            path.display()
        ));
    }
    if password.contains(['\n', '\r']) {
        return Err(format!(
            "--pyroscope-password-file {}: expected the password on one line",
            path.display()
        ));
    }
    Ok(Secret(password.to_string()))
}

/// Basic auth cannot carry a user with a `:`, nor control characters.
fn check_user(user: &str) -> Result<String, String> {
    if user.is_empty() || user.contains(':') || user.chars().any(char::is_control) {
        return Err(format!(
            "--pyroscope-user `{}`: expected a non-empty name without `:` or control characters",
            user.escape_debug()
        ));
    }
    Ok(user.to_string())
}

/// A tenant ID as Grafana's backends accept it: letters, digits and
/// `!-_.*'()`, at most 150 characters (`|` separates several).
fn check_tenant(tenant: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "!-_.*'()|".contains(c);
    if tenant.is_empty() || tenant.len() > MAX_TENANT_LEN || !tenant.chars().all(allowed) {
        return Err(format!(
            "--pyroscope-tenant `{}`: expected 1 to {MAX_TENANT_LEN} letters, digits or \
             !-_.*'() (| between tenants)",
            tenant.escape_debug()
        ));
    }
    Ok(tenant.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct TempPassword(PathBuf);

    impl TempPassword {
        fn new(tag: &str, content: &str) -> TempPassword {
            let path = std::env::temp_dir()
                .join(format!("netlens-unit-{tag}-{}.secret", std::process::id()));
            std::fs::write(&path, content).unwrap();
            TempPassword(path)
        }
    }

    impl Drop for TempPassword {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn access(
        user: Option<&str>,
        file: Option<&Path>,
        env: Option<&str>,
        tenant: Option<&str>,
    ) -> Result<Access, String> {
        let opts = AccessOptions {
            user,
            password_file: file,
            tenant,
        };
        Access::from_options(&opts, env.map(str::to_string))
    }

    #[test]
    fn no_options_no_headers() {
        let a = access(None, None, None, None).unwrap();
        assert_eq!(a, Access::default());
        assert!(a.headers().is_empty());
    }

    #[test]
    fn basic_auth_header_from_the_environment_or_a_file() {
        // RFC 7617's example: Aladdin / open sesame.
        let a = access(Some("Aladdin"), None, Some("open sesame"), None).unwrap();
        assert_eq!(
            a.headers(),
            vec![("Authorization", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==".into())]
        );
        // A file wins over the environment; one trailing line end is not
        // part of the password.
        for content in ["open sesame\n", "open sesame\r\n", "open sesame"] {
            let file = TempPassword::new("basic", content);
            let a = access(Some("Aladdin"), Some(&file.0), Some("other"), None).unwrap();
            assert_eq!(
                a.headers()[0].1,
                "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
                "{content:?}"
            );
        }
    }

    #[test]
    fn tenant_header_alone_or_with_auth() {
        let a = access(None, None, None, Some("team-a")).unwrap();
        assert_eq!(a.headers(), vec![("X-Scope-OrgID", "team-a".into())]);
        let a = access(Some("u"), None, Some("p"), Some("team-a|team-b")).unwrap();
        let names: Vec<_> = a.headers().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["Authorization", "X-Scope-OrgID"]);
        assert_eq!(a.headers()[1].1, "team-a|team-b");
        for bad in ["", "a b", "a/b", "a\nb", &"x".repeat(151)] {
            let e = access(None, None, None, Some(bad)).unwrap_err();
            assert!(e.starts_with("--pyroscope-tenant"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn inconsistent_options_are_one_clear_error_without_the_secret() {
        let e = access(Some("u"), None, None, None).unwrap_err();
        assert!(e.contains("--pyroscope-user needs a password"), "{e}");
        assert!(e.contains(PASSWORD_ENV), "{e}");
        let e = access(None, None, Some("s3cret-env"), None).unwrap_err();
        assert!(
            e.contains("no --pyroscope-user") && e.contains(PASSWORD_ENV),
            "{e}"
        );
        assert!(!e.contains("s3cret-env"), "{e}");
        let file = TempPassword::new("nouser", "s3cret-file\n");
        let e = access(None, Some(&file.0), None, None).unwrap_err();
        assert!(e.contains("--pyroscope-password-file"), "{e}");
        assert!(!e.contains("s3cret-file"), "{e}");
        let e = access(Some("u"), None, Some(""), None).unwrap_err();
        assert!(e.contains("empty"), "{e}");
        let e = access(Some("u:x"), None, Some("p"), None).unwrap_err();
        assert!(e.contains("without `:`"), "{e}");
    }

    #[test]
    fn unreadable_empty_or_multi_line_password_files() {
        let missing = Path::new("/nonexistent/netlens/password");
        let e = access(Some("u"), Some(missing), Some("env"), None).unwrap_err();
        assert!(
            e.starts_with("--pyroscope-password-file /nonexistent/netlens/password: cannot read"),
            "{e}"
        );
        let empty = TempPassword::new("empty", "\n");
        let e = access(Some("u"), Some(&empty.0), None, None).unwrap_err();
        assert!(e.contains("is empty"), "{e}");
        let two = TempPassword::new("two", "s3cret\nmore\n");
        let e = access(Some("u"), Some(&two.0), None, None).unwrap_err();
        assert!(e.contains("one line") && !e.contains("s3cret"), "{e}");
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let a = access(Some("u"), None, Some("s3cret"), Some("t")).unwrap();
        let shown = format!("{a:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("***"), "{shown}");
    }
}
