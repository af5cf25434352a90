//! What an image's config says about running it: `Env`, `WorkingDir`,
//! `Entrypoint`/`Cmd` and `User`, the last resolved once, at unpack time, in the image's
//! own /etc/passwd and /etc/group.

use serde::{Deserialize, Serialize};

use super::unpack::Root;

/// uid, gid and supplementary groups.
pub type Ids = (u32, u32, Vec<u32>);

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Defaults {
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// The image's `User`, as written.
    pub user: Option<String>,
    /// ... and as resolved: uid, gid, supplementary groups; or why it could not be.
    pub ids: Option<Result<Ids, String>>,
}

impl Defaults {
    pub fn of(cfg: &oci_spec::image::ImageConfiguration, root: &Root) -> Defaults {
        let Some(c) = cfg.config() else {
            return Defaults::default();
        };
        let user = c.user().clone().filter(|u| !u.is_empty());
        let ids = user.as_deref().map(|u| resolve_user(u, root));
        Defaults {
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            user,
            ids,
        }
    }

    /// The command to run when the command line gives none.
    pub fn command(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }
}

/// `user[:group]`, each a name or a number, the way Docker resolves it: a name must be
/// in the image's files; a bare uid not in /etc/passwd runs with gid 0.
fn resolve_user(spec: &str, root: &Root) -> Result<Ids, String> {
    let read = |p: &str| {
        root.read(p)
            .map(|o| String::from_utf8_lossy(&o.unwrap_or_default()).into_owned())
            .map_err(|e| format!("reading the image's {p}: {e:#}"))
    };
    let passwd = read("/etc/passwd")?;
    let group = read("/etc/group")?;
    resolve_in(spec, &passwd, &group)
}

pub fn resolve_in(spec: &str, passwd: &str, group: &str) -> Result<Ids, String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let users: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect();
    let groups: Vec<Vec<&str>> = group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 3)
        .collect();
    let entry = users
        .iter()
        .find(|f| f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u));
    let (uid, name, mut gid) = match (u.parse::<u32>(), entry) {
        (_, Some(f)) => (
            f[2].parse::<u32>()
                .map_err(|_| format!("the image's /etc/passwd has a bad uid for {u:?}"))?,
            Some(f[0]),
            f[3].parse::<u32>().unwrap_or(0),
        ),
        (Ok(n), None) => (n, None, 0),
        (Err(_), None) => return Err(format!("the image's user {u:?} is not in its /etc/passwd")),
    };
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("the image's group {g:?} is not in its /etc/group"))?,
        };
    }
    let mut extra: Vec<u32> = match (name, g) {
        (Some(n), None) => groups
            .iter()
            .filter(|f| f.get(3).is_some_and(|m| m.split(',').any(|m| m == n)))
            .filter_map(|f| f[2].parse().ok())
            .collect(),
        _ => Vec::new(),
    };
    extra.retain(|&x| x != gid);
    extra.sort_unstable();
    extra.dedup();
    Ok((uid, gid, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_like_docker() {
        let pw = "root:x:0:0::/root:/bin/sh\napp:x:1000:100::/home/app:/bin/sh\n";
        let gr = "root:x:0:\nusers:x:100:\nmpi:x:500:app,other\nwheel:x:10:root\n";
        assert_eq!(resolve_in("app", pw, gr).unwrap(), (1000, 100, vec![500]));
        assert_eq!(resolve_in("1000", pw, gr).unwrap(), (1000, 100, vec![500]));
        assert_eq!(resolve_in("4242", pw, gr).unwrap(), (4242, 0, vec![]));
        assert_eq!(resolve_in("app:mpi", pw, gr).unwrap(), (1000, 500, vec![]));
        assert_eq!(resolve_in("0:7", pw, gr).unwrap(), (0, 7, vec![]));
        assert!(resolve_in("nobody", pw, gr)
            .unwrap_err()
            .contains("not in its /etc/passwd"));
        assert!(resolve_in("app:nogroup", pw, gr).is_err());
    }
}
