//! Give a container's LWK launcher a node-unique namespace-local pid.
//!
//! McKernel keys processes by their pid *inside* their PID namespace and refuses a second
//! mcexec with the same one (lwk-tools.md §2.5), while every container numbers its pids
//! from 1. So each McKernel container's launcher is placed on a pid of its own: at
//! `start`, just before lwk-init forks the launcher, the runtime picks a slot (a range
//! `pid_base + slot*pid_stride`, `pid_stride` long, for the launcher and the processes
//! it starts) and sets the container namespace's `ns_last_pid` to the slot's first pid
//! minus one, so the first fork in the container, lwk-init's fork of the launcher (or of
//! a conexec job's rank server), gets it.
//!
//! A neighbour must not be able to hold that pid first: any process can reach any pid
//! of its own namespace by forking, and McKernel compares only the numbers. The slot is
//! therefore chosen from what the node looks like at that moment: no pid of the slot's
//! range may be in use in another LWK container's namespace (nor the host's), and among
//! the free slots the one farthest from every other LWK namespace's highest pid and
//! every other container's slot is taken, so that forking a few hundred (or thousand)
//! times never walks into a neighbour's launcher. Once the launcher runs, a neighbour
//! that reaches its pid only fails its own launcher ("per-process data ... already
//! exists"). Since Linux 6.14 every PID namespace has its own `kernel.pid_max` (4194304
//! by default, whatever the host's): slots are then placed above the host's pid_max,
//! where no host process can be, with room for thousands of containers. On older kernels
//! the host's pid_max bounds them. (`pid_max` cannot fence a namespace into a range of
//! its own: it is a ceiling only, and allocation wraps back to 300, below every slot.)
//!
//! The sysctls act on the *accessing* process's PID namespace, and setns(CLONE_NEWPID)
//! only moves a process's future children, hence: a child that enters the namespace, and
//! its child that reads or writes.
//!
//! Both are `clone(CLONE_VM | CLONE_VFORK)` children on small stacks of their own: they
//! share our memory while we wait, so no page tables are copied (a fork of the runtime
//! cost about a millisecond, most of the LWK's per-container overhead). They only make
//! raw system calls on data prepared beforehand.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const STACK: usize = 64 * 1024;

/// What the two children need, prepared before either exists.
struct Job {
    ns_fd: libc::c_int,
    path: CString,
    /// Written to the file; when empty, the file is read into `buf` instead.
    value: Vec<u8>,
    buf: *mut u8,
    buf_len: usize,
    /// Bytes read into `buf`, set by the worker.
    read: *mut isize,
    /// The top of the worker's stack (stacks grow down on every Linux target we build for).
    writer_stack: *mut libc::c_void,
}

/// Exit codes of the children, mapped to errors by [`set_ns_last_pid`].
const SETNS_FAILED: libc::c_int = 2;
const CLONE_FAILED: libc::c_int = 3;
const OPEN_FAILED: libc::c_int = 4;
const WRITE_FAILED: libc::c_int = 5;
const WAIT_FAILED: libc::c_int = 6;

fn stack_top(stack: &mut [u8]) -> *mut libc::c_void {
    let top = stack.as_mut_ptr() as usize + stack.len();
    (top & !15) as *mut libc::c_void
}

/// Wait for a child, retrying on EINTR; its exit code, or `None`.
///
/// # Safety
/// `pid` must be a child of the caller.
unsafe fn wait_exit(pid: libc::pid_t) -> Option<libc::c_int> {
    let mut st = 0;
    loop {
        if libc::waitpid(pid, &mut st, libc::__WALL) == pid {
            return libc::WIFEXITED(st).then(|| libc::WEXITSTATUS(st));
        }
        if *libc::__errno_location() != libc::EINTR {
            return None;
        }
    }
}

/// Runs in the namespace: writes the value to the sysctl, or reads it.
extern "C" fn writer(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the Job the parent keeps alive while it is suspended, and
    // `buf`/`read` to buffers of the parent's that outlive the call.
    unsafe {
        let job = &*(arg as *const Job);
        let reading = job.value.is_empty();
        let mode = if reading {
            libc::O_RDONLY
        } else {
            libc::O_WRONLY
        };
        let f = libc::open(job.path.as_ptr(), mode | libc::O_CLOEXEC);
        if f < 0 {
            return OPEN_FAILED;
        }
        let ok = if reading {
            let n = libc::read(f, job.buf.cast(), job.buf_len);
            *job.read = n;
            n > 0
        } else {
            let n = libc::write(f, job.value.as_ptr().cast(), job.value.len());
            n == job.value.len() as isize
        };
        libc::close(f);
        if ok {
            0
        } else {
            WRITE_FAILED
        }
    }
}

/// Enters the container's PID namespace for its children, then starts the writer there.
extern "C" fn enterer(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: as in `writer`; the writer's stack is a separate buffer of the parent's.
    unsafe {
        let job = &*(arg as *const Job);
        // No namespace given: a fresh one, whose pid 1 the worker becomes.
        let entered = if job.ns_fd < 0 {
            libc::unshare(libc::CLONE_NEWPID)
        } else {
            libc::setns(job.ns_fd, libc::CLONE_NEWPID)
        };
        if entered != 0 {
            return SETNS_FAILED;
        }
        let pid = libc::clone(
            writer,
            job.writer_stack,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            arg,
        );
        if pid < 0 {
            return CLONE_FAILED;
        }
        wait_exit(pid).unwrap_or(WAIT_FAILED)
    }
}

/// Whether the process shares our PID namespace (nothing to arrange: host pids are
/// unique already).
pub fn shares_our_namespace(pid: i32) -> std::io::Result<bool> {
    Ok(ns_inode(pid)? == ns_inode_of("/proc/self/ns/pid")?)
}

/// The inode of a process's PID namespace.
pub fn ns_inode(pid: i32) -> std::io::Result<u64> {
    ns_inode_of(&format!("/proc/{pid}/ns/pid"))
}

fn ns_inode_of(path: &str) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.ino())
}

/// Returns Ok(false) when the container shares our PID namespace.
pub fn set_ns_last_pid(init_pid: i32, last: u32) -> std::io::Result<bool> {
    if shares_our_namespace(init_pid)? {
        return Ok(false);
    }
    ns_sysctl(Some(init_pid), "ns_last_pid", &last.to_string())?;
    Ok(true)
}

/// `kernel.pid_max` as the container's PID namespace sees it (its own since Linux 6.14).
pub fn ns_pid_max(init_pid: i32) -> std::io::Result<u32> {
    parse_pid_max(ns_sysctl(Some(init_pid), "pid_max", "")?)
}

/// `kernel.pid_max` as a new PID namespace starts with: the host's before Linux 6.14,
/// its own (4194304) since.
pub fn fresh_ns_pid_max() -> std::io::Result<u32> {
    parse_pid_max(ns_sysctl(None, "pid_max", "")?)
}

fn parse_pid_max(s: String) -> std::io::Result<u32> {
    s.trim().parse().map_err(std::io::Error::other)
}

/// Write `value` to `/proc/sys/kernel/<name>` inside the PID namespace of `init_pid` (a
/// fresh one for None), or read it when `value` is empty.
fn ns_sysctl(init_pid: Option<i32>, name: &str, value: &str) -> std::io::Result<String> {
    let fd = match init_pid {
        Some(p) => Some(std::fs::File::open(format!("/proc/{p}/ns/pid"))?),
        None => None,
    };
    let mut stacks = vec![0u8; 2 * STACK];
    let (enterer_stack, writer_stack) = stacks.split_at_mut(STACK);
    let mut buf = [0u8; 64];
    let mut read: isize = 0;
    let job = Job {
        ns_fd: fd.as_ref().map_or(-1, |f| f.as_raw_fd()),
        path: CString::new(format!("/proc/sys/kernel/{name}")).map_err(std::io::Error::other)?,
        value: value.as_bytes().to_vec(),
        buf: buf.as_mut_ptr(),
        buf_len: buf.len(),
        read: &mut read,
        writer_stack: stack_top(writer_stack),
    };
    // SAFETY: CLONE_VFORK suspends us until the child exits, so `job` and both stacks
    // outlive every use the children make of them; the children make raw system calls only.
    let code = unsafe {
        let pid = libc::clone(
            enterer,
            stack_top(enterer_stack),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &job as *const Job as *mut libc::c_void,
        );
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        wait_exit(pid)
    };
    match code {
        Some(0) => Ok(String::from_utf8_lossy(&buf[..read.max(0) as usize]).into_owned()),
        Some(SETNS_FAILED) => Err(std::io::Error::other(
            "setns into the container's PID namespace failed",
        )),
        Some(OPEN_FAILED) | Some(WRITE_FAILED) => Err(std::io::Error::other(format!(
            "{} /proc/sys/kernel/{name} in the container's PID namespace failed (ns_last_pid needs CONFIG_CHECKPOINT_RESTORE and CAP_SYS_ADMIN over the namespace)",
            if value.is_empty() { "reading" } else { "writing" }
        ))),
        other => Err(std::io::Error::other(format!(
            "the helper that reaches /proc/sys/kernel/{name} in the container's PID namespace failed (exit {other:?})"
        ))),
    }
}

/// Namespace-local pids in use on the node, as McKernel would see them.
#[derive(Debug, Default)]
pub struct InUse {
    /// Every pid in use in the host's namespace or one of the namespaces asked about.
    pub pids: BTreeSet<u32>,
    /// The highest pid in use in each of the namespaces asked about but the own one:
    /// where each is heading as it forks.
    pub fronts: Vec<u32>,
}

/// The pids in use in the PID namespaces of `inits` (host pids of a process in each; the
/// container's own among them, whose front is left out), and with `host` in the host's.
/// Only those matter: no other process can open an LWK device.
///
/// A container's namespace is read through its own /proc (one directory listing),
/// once that is shown to be a procfs of that very namespace (its pid 1 is in it); else,
/// and for the host, from the host's /proc (the last `NSpid` of each process's status).
pub fn pids_in_use(inits: &[i32], own: i32, host: bool) -> InUse {
    let mut pids = BTreeSet::new();
    let mut fronts = Vec::new();
    let mut unread: BTreeMap<u64, bool> = BTreeMap::new(); // ns -> is the own one
    for &init in inits {
        let Ok(ns) = ns_inode(init) else {
            continue; // gone
        };
        match listed_pids(init, ns) {
            Some(local) => {
                if init != own {
                    fronts.extend(local.iter().max());
                }
                pids.extend(local);
            }
            None => {
                unread.insert(ns, init == own);
            }
        }
    }
    if !host && unread.is_empty() {
        return InUse { pids, fronts };
    }
    let host_ns = ns_inode_of("/proc/self/ns/pid").unwrap_or(0);
    let mut highest: BTreeMap<u64, u32> = BTreeMap::new();
    for pid in numeric_entries(Path::new("/proc")) {
        let Ok(ns) = ns_inode(pid as i32) else {
            continue; // gone meanwhile
        };
        if ns == host_ns {
            if host {
                pids.insert(pid);
            }
            continue;
        }
        if !unread.contains_key(&ns) {
            continue;
        }
        let local = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|st| innermost_pid(&st));
        if let Some(local) = local {
            pids.insert(local);
            let h = highest.entry(ns).or_insert(0);
            *h = (*h).max(local);
        }
    }
    fronts.extend(
        highest
            .into_iter()
            .filter(|(ns, _)| !unread.get(ns).copied().unwrap_or(false))
            .map(|(_, h)| h),
    );
    InUse { pids, fronts }
}

/// The pids of namespace `ns` as its own procfs, seen through `init`'s root, lists
/// them; None unless that /proc is a procfs of `ns` (its pid 1 is in `ns`).
fn listed_pids(init: i32, ns: u64) -> Option<Vec<u32>> {
    let proc_dir = PathBuf::from(format!("/proc/{init}/root/proc"));
    let own = std::fs::metadata(format!("/proc/{init}/ns/pid")).ok()?;
    let theirs = std::fs::metadata(proc_dir.join("1/ns/pid")).ok()?;
    if (theirs.dev(), theirs.ino()) != (own.dev(), ns) {
        return None;
    }
    Some(numeric_entries(&proc_dir))
}

fn numeric_entries(dir: &Path) -> Vec<u32> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The last value of the `NSpid:` line of a /proc/<pid>/status.
fn innermost_pid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// The pid range slots may take and how slots map onto it.
#[derive(Debug, Clone, Copy)]
pub struct SlotSpace {
    pub base: u32,
    pub stride: u32,
    /// Lowest first pid a slot may have.
    pub lo: u32,
    /// The container namespace's pid_max: a slot must end below it.
    pub hi: u32,
}

impl SlotSpace {
    /// `ns_pid_max` is the container namespace's, `host_pid_max` the host's. Where the
    /// namespace reaches beyond the host (Linux 6.14+), slots start above the host's
    /// pids, which no host process can ever have.
    pub fn new(base: u32, stride: u32, ns_pid_max: u32, host_pid_max: u32) -> SlotSpace {
        let lo = if ns_pid_max > host_pid_max {
            base.max(host_pid_max)
        } else {
            base
        };
        SlotSpace {
            base,
            stride: stride.max(1),
            lo,
            hi: ns_pid_max,
        }
    }

    pub fn first_pid(&self, slot: u32) -> u64 {
        u64::from(self.base) + u64::from(slot) * u64::from(self.stride)
    }

    /// How many slots fit in [lo, hi).
    pub fn candidates(&self) -> std::ops::Range<u32> {
        let first = self.lo.saturating_sub(self.base).div_ceil(self.stride);
        let end = (self.hi.saturating_sub(self.base) / self.stride).max(first);
        first..end
    }
}

/// Pure: the slot for a launcher about to start. Never one of `taken` (other
/// containers' slots), never one with a pid of its range in `in_use.pids`; among the
/// rest, the one farthest (circularly, over the slot space) from every other
/// namespace's front and every taken slot, the lowest on ties. None: no slot is free.
pub fn choose_slot(space: &SlotSpace, taken: &BTreeSet<u32>, in_use: &InUse) -> Option<u32> {
    let range = space.candidates();
    let span = u64::from(space.hi.saturating_sub(space.lo)).max(1);
    let lo = u64::from(space.lo);
    // Positions on the circle [lo, hi), sorted; a front below lo (an old kernel's host
    // range) counts as lo.
    let pos = |p: u64| p.saturating_sub(lo) % span;
    let mut points: Vec<u64> = in_use
        .fronts
        .iter()
        .map(|f| pos(u64::from(*f)))
        .chain(taken.iter().map(|t| pos(space.first_pid(*t))))
        .collect();
    points.sort_unstable();
    // Circular distance to the nearest point: its neighbours in sorted order.
    let dist = |p: u64| -> u64 {
        if points.is_empty() {
            return 0;
        }
        let a = pos(p);
        let i = points.partition_point(|q| *q <= a);
        let below = points[(i + points.len() - 1) % points.len()];
        let above = points[i % points.len()];
        [below, above]
            .iter()
            .map(|q| {
                let d = a.abs_diff(*q);
                d.min(span - d)
            })
            .min()
            .unwrap_or(0)
    };
    let stride = u64::from(space.stride);
    let eligible = |s: u32| {
        let p = space.first_pid(s);
        let (a, b) = (p as u32, (p + stride).min(u64::from(u32::MAX)) as u32);
        !taken.contains(&s) && in_use.pids.range(a..b).next().is_none()
    };
    let (first, end) = (range.start, range.end);
    if first >= end {
        return None;
    }
    // The nearest eligible slot from `s` on, going down or up round the range.
    let search = |s: u32, down: bool| -> Option<u32> {
        let mut s = s;
        for _ in first..end {
            if eligible(s) {
                return Some(s);
            }
            s = match (down, s) {
                (true, s) if s == first => end - 1,
                (true, s) => s - 1,
                (false, s) if s + 1 == end => first,
                (false, s) => s + 1,
            };
        }
        None
    };
    if points.is_empty() {
        return search(first, false);
    }
    // Within a gap between two neighbouring points the distance rises to the middle and
    // falls after it, so the best slot of each gap is the eligible one nearest its middle
    // from below or from above; the best of those wins, the lowest on ties (the same
    // answer as trying every slot, without trying every slot).
    let slot_at_or_below = |t: u64| -> u32 {
        let at = (lo + t)
            .checked_sub(u64::from(space.base))
            .map(|v| v / stride);
        match at {
            Some(s) if s >= u64::from(first) && s < u64::from(end) => s as u32,
            _ => end - 1,
        }
    };
    let mut tried = Vec::with_capacity(2 * points.len());
    for (i, a) in points.iter().enumerate() {
        let b = match points.get(i + 1) {
            Some(b) => *b,
            None => points[0] + span,
        };
        let below = slot_at_or_below((a + (b - a) / 2) % span);
        let above = if below + 1 == end { first } else { below + 1 };
        tried.extend(search(below, true));
        tried.extend(search(above, false));
    }
    tried
        .into_iter()
        .map(|s| (dist(space.first_pid(s)), std::cmp::Reverse(s)))
        .max()
        .map(|(_, std::cmp::Reverse(s))| s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> SlotSpace {
        SlotSpace::new(1000, 500, 4_194_304, 32768)
    }

    #[test]
    fn slots_sit_above_the_hosts_pids_where_the_namespace_reaches_beyond_them() {
        let s = space();
        assert_eq!(s.first_pid(s.candidates().start), 33000);
        // An older kernel: the host's pid_max bounds every namespace.
        let old = SlotSpace::new(1000, 500, 32768, 32768);
        assert_eq!(old.candidates(), 0..63);
    }

    #[test]
    fn an_empty_node_takes_the_first_slot_and_the_next_goes_far_away() {
        let s = space();
        let first = choose_slot(&s, &BTreeSet::new(), &InUse::default()).unwrap();
        assert_eq!(s.first_pid(first), 33000);
        let taken = BTreeSet::from([first]);
        let second = choose_slot(&s, &taken, &InUse::default()).unwrap();
        let gap = s.first_pid(second) - s.first_pid(first);
        assert!(
            gap > 2_000_000 && gap < 2_200_000,
            "second slot at {gap} from the first"
        );
    }

    #[test]
    fn a_slot_whose_pids_a_neighbour_holds_is_never_chosen() {
        let s = SlotSpace::new(1000, 500, 3000, 3000); // four slots: 1000 1500 2000 2500
        let held = |p: &[u32]| InUse {
            pids: p.iter().copied().collect(),
            fronts: vec![],
        };
        assert_eq!(choose_slot(&s, &BTreeSet::new(), &held(&[1000])), Some(1));
        // Anywhere in the range: the launcher's children take the next pids.
        assert_eq!(
            choose_slot(&s, &BTreeSet::new(), &held(&[1000, 1777])),
            Some(2)
        );
        assert_eq!(
            choose_slot(&s, &BTreeSet::from([0, 1, 2]), &held(&[2999])),
            None
        );
    }

    #[test]
    fn the_slot_farthest_from_every_front_wins() {
        let s = SlotSpace::new(1000, 500, 11000, 11000); // slots 0..20
        let in_use = InUse {
            pids: [1000, 1001, 3005].into_iter().collect(),
            fronts: vec![1001, 3005],
        };
        let got = choose_slot(&s, &BTreeSet::new(), &in_use).unwrap();
        // The middle of the larger gap, from 3005 round to 1001: about 7000.
        assert_eq!(s.first_pid(got), 7000);
    }

    #[test]
    fn the_choice_agrees_with_a_brute_force_search() {
        let x = std::cell::Cell::new(12345u64);
        let next = |m: u64| {
            x.set(
                x.get()
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407),
            );
            (x.get() >> 33) % m
        };
        // Slots aligned with the range, and (per-namespace pid_max) offset from it.
        for s in [
            SlotSpace::new(1000, 100, 30_000, 30_000),
            SlotSpace::new(1000, 300, 60_000, 30_000),
        ] {
            let (lo, hi) = (u64::from(s.lo), u64::from(s.hi));
            let range = s.candidates();
            for _ in 0..300 {
                let pid = |below: u64| (lo - below + next(hi - lo + below)) as u32;
                let fronts: Vec<u32> = (0..next(6)).map(|_| pid(1000)).collect();
                // Some pids in use anywhere, most of them not fronts (held, not heading).
                let held: Vec<u32> = (0..next(60)).map(|_| pid(0)).collect();
                let taken: BTreeSet<u32> = (0..next(40))
                    .map(|_| range.start + next(u64::from(range.end - range.start)) as u32)
                    .collect();
                let in_use = InUse {
                    pids: fronts.iter().chain(&held).copied().collect(),
                    fronts: fronts.clone(),
                };
                let span = hi - lo;
                let pos = |p: u64| p.saturating_sub(lo) % span;
                let points: Vec<u64> = fronts
                    .iter()
                    .map(|f| pos(u64::from(*f)))
                    .chain(taken.iter().map(|t| pos(s.first_pid(*t))))
                    .collect();
                let brute = s
                    .candidates()
                    .filter(|c| !taken.contains(c))
                    .filter(|c| {
                        let p = s.first_pid(*c) as u32;
                        in_use.pids.range(p..p + s.stride).next().is_none()
                    })
                    .map(|c| {
                        let a = pos(s.first_pid(c));
                        let d = points
                            .iter()
                            .map(|q| a.abs_diff(*q).min(span - a.abs_diff(*q)))
                            .min()
                            .unwrap_or(0);
                        (d, std::cmp::Reverse(c))
                    })
                    .max()
                    .map(|(_, std::cmp::Reverse(c))| c);
                assert_eq!(
                    choose_slot(&s, &taken, &in_use),
                    brute,
                    "{s:?} {fronts:?} {held:?} {taken:?}"
                );
            }
        }
    }

    #[test]
    fn innermost_pid_is_the_last_nspid() {
        let st = "Name:\tsh\nNSpid:\t4242\t33001\nPPid:\t1\n";
        assert_eq!(innermost_pid(st), Some(33001));
        assert_eq!(innermost_pid("Name:\tx\n"), None);
    }

    #[test]
    fn a_fresh_namespace_has_a_pid_max_of_at_least_the_hosts() {
        let host: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(fresh_ns_pid_max().unwrap() >= host);
    }

    #[test]
    fn same_namespace_needs_nothing() {
        let me = std::process::id() as i32;
        assert!(!set_ns_last_pid(me, 5000).unwrap());
    }

    /// `unshare --pid --fork [extra] sleep 30`, and the host pid of the namespace's PID 1
    /// (unshare's child); None where unshare is unavailable.
    fn namespace(extra: &[&str]) -> Option<(std::process::Child, i32)> {
        let init = match std::process::Command::new("unshare")
            .args(["--pid", "--fork"])
            .args(extra)
            .args(["sleep", "30"])
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("unshare unavailable ({e}); skipping");
                return None;
            }
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let kids =
                std::fs::read_to_string(format!("/proc/{}/task/{}/children", init.id(), init.id()))
                    .unwrap_or_default();
            // Once it runs sleep, unshare's set-up (the /proc mount) is done.
            if let Some(p) = kids.split_whitespace().next() {
                let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                if comm.trim() == "sleep" {
                    return Some((init, p.parse::<i32>().unwrap()));
                }
            }
            assert!(std::time::Instant::now() < deadline, "no namespace init");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn pids_in_use_come_from_the_namespaces_own_proc_or_else_from_the_hosts() {
        for extra in [&["--mount-proc"][..], &[]] {
            let Some((mut unshare, ns_init)) = namespace(extra) else {
                return;
            };
            // Its own proc lists it (with --mount-proc); the host's NSpid finds it anyway.
            assert_eq!(
                listed_pids(ns_init, ns_inode(ns_init).unwrap()).is_some(),
                !extra.is_empty()
            );
            let seen = pids_in_use(&[ns_init], 0, false);
            let mine = pids_in_use(&[ns_init], ns_init, false);
            let _ = unshare.kill();
            let _ = unshare.wait();
            assert!(seen.pids.contains(&1), "{extra:?}: {seen:?}");
            assert_eq!(seen.fronts, vec![1], "{extra:?}");
            assert!(mine.fronts.is_empty(), "{extra:?}: the own front counts");
        }
    }

    #[test]
    fn the_next_fork_in_the_namespace_gets_the_pid() {
        let Some((mut init, ns_pid)) = namespace(&[]) else {
            return;
        };
        assert!(set_ns_last_pid(ns_pid, 4321).unwrap());
        // The namespace's next pid is 4322: enter it and look.
        let out = std::process::Command::new("nsenter")
            .args(["-t", &ns_pid.to_string(), "-p", "--", "sh", "-c", "echo $$"])
            .output()
            .unwrap();
        let _ = init.kill();
        let _ = init.wait();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4322");
    }
}
