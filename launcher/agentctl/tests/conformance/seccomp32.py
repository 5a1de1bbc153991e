# Socket and ioctl calls whose 32-bit argument matches a refused value in its
# low half, with and without high bits set. The kernel reads only the low
# half, so the filter must answer all four (EPERM: errno1) whatever the high
# 32 bits hold, under every runtime and whichever operand order it reads a
# masked comparison in. A plain unix socket must still work. Used by the
# conformance probe and by the runtime (runc/crun) bundle test.
import ctypes
import platform

SOCKET, IOCTL = (198, 29) if platform.machine() == "aarch64" else (41, 16)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def call(*args):
    r = libc.syscall(*[ctypes.c_ulong(a) for a in args])
    return "ok" if r >= 0 else "errno%d" % ctypes.get_errno()


b = ctypes.create_string_buffer(1)
print(
    " ".join(
        [
            "vsock=" + call(SOCKET, 40, 1, 0),
            "vsock-high=" + call(SOCKET, 0x100000028, 1, 0),
            "tiocsti=" + call(IOCTL, 0, 0x5412, ctypes.addressof(b)),
            "tiocsti-high=" + call(IOCTL, 0, 0x100005412, ctypes.addressof(b)),
            "unix=" + call(SOCKET, 1, 1, 0),
        ]
    )
)
