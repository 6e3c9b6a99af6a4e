// The one place that includes intel-ipsec-mb.h. The header chooses structure
// alignment by platform macro: without LINUX defined, gcm_key_data loses its
// 64-byte alignment and the AVX-512 key expansion faults on it.
#pragma once
#ifndef LINUX
#define LINUX 1
#endif
#include <intel-ipsec-mb.h>

static_assert(alignof(gcm_key_data) == 64, "intel-ipsec-mb.h included without LINUX defined");
