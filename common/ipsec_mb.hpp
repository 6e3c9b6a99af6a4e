// The one place that includes intel-ipsec-mb.h. The header chooses structure
// alignment by platform macro: without LINUX defined, gcm_key_data loses its
// 64-byte alignment and the AVX-512 key expansion faults on it.
// NO_COMPAT_IMB_API_053 drops the pre-0.53 aliases (SHA1, MD5, ...) that
// would otherwise collide with OpenSSL's functions of the same names.
#pragma once
#ifndef NO_COMPAT_IMB_API_053
#define NO_COMPAT_IMB_API_053 1
#endif
#ifndef LINUX
#define LINUX 1
#endif
#include <intel-ipsec-mb.h>

static_assert(alignof(gcm_key_data) == 64, "intel-ipsec-mb.h included without LINUX defined");
