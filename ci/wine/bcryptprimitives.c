/*
 * Stand-in for bcryptprimitives.dll, used only to run Windows test binaries
 * under Wine. Rust's std (since 1.78) imports ProcessPrng from this DLL,
 * which Wine 8 does not ship, so every Rust .exe fails to start there.
 * This exports ProcessPrng and fills the buffer with RtlGenRandom
 * (SystemFunction036 in advapi32). Never shipped; see ci/windows.sh.
 */
#include <windows.h>
#include <ntsecapi.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    /* RtlGenRandom takes a ULONG length: feed large buffers in chunks. */
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!RtlGenRandom(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
