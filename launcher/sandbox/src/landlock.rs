//! Landlock, for the one thing namespaces cannot do for a sandbox on the
//! host's network: abstract unix sockets (`@/tmp/.X11-unix/X0`, some D-Bus
//! buses) live in the network namespace, so a sandbox that shares the
//! host's can connect to the X server (and type into any window) or to a
//! session bus. Landlock's scope for abstract sockets (ABI 6, Linux 6.12)
//! refuses connections from inside the sandbox to abstract sockets created
//! outside it, and nothing else.
//!
//! The calls are made directly: the structure is three `u64`s and two
//! syscalls, which does not justify a dependency.

use nix::errno::Errno;

/// `LANDLOCK_CREATE_RULESET_VERSION`: ask for the ABI version.
const CREATE_RULESET_VERSION: libc::c_ulong = 1;
/// `LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET`.
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1;
/// The first ABI with scopes.
pub const ABI_SCOPES: u32 = 6;

/// `struct landlock_ruleset_attr` as of ABI 6.
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// The kernel's Landlock ABI version, or why there is none (ENOSYS: not
/// built in; EOPNOTSUPP: disabled at boot).
pub fn abi() -> Result<u32, Errno> {
    // SAFETY: the version query takes no attribute structure.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r as u32)
    }
}

/// Whether this kernel can keep a sandbox away from the host's abstract
/// unix sockets, and if not, why not (for the user).
pub fn abstract_unix_scoping() -> Result<(), String> {
    match abi() {
        Ok(v) if v >= ABI_SCOPES => Ok(()),
        Ok(v) => Err(format!(
            "this kernel's Landlock is ABI {v}; scoping abstract unix sockets needs ABI {ABI_SCOPES} (Linux 6.12)"
        )),
        Err(Errno::EOPNOTSUPP) => Err(
            "Landlock is disabled on this kernel (add landlock to the lsm= boot parameter)".into(),
        ),
        Err(e) => Err(format!("this kernel has no Landlock ({})", e.desc())),
    }
}

/// Confines the calling process and everything it starts afterwards:
/// abstract unix sockets created outside can no longer be connected to.
/// Needs `no_new_privs` (the sandbox has it). Irreversible.
pub fn scope_abstract_unix_sockets() -> Result<(), Errno> {
    let attr = RulesetAttr {
        handled_access_fs: 0,
        handled_access_net: 0,
        scoped: SCOPE_ABSTRACT_UNIX_SOCKET,
    };
    // SAFETY: `attr` is a valid ruleset attribute of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `fd` is the ruleset descriptor just created; it is closed
    // right after.
    let r = unsafe { libc::syscall(libc::SYS_landlock_restrict_self, fd as libc::c_int, 0u32) };
    let err = Errno::last();
    // SAFETY: closing the descriptor we own.
    unsafe { libc::close(fd as libc::c_int) };
    if r < 0 { Err(err) } else { Ok(()) }
}
