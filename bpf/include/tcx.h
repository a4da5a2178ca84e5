/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * TCX return codes. Debian 12's UAPI headers predate TCX (Linux 6.6) and
 * newer ones define them in an enum, so #ifndef cannot test for them: the
 * project uses its own names for the same values, which are the classic tc
 * ones (TCX_NEXT == TC_ACT_UNSPEC, TCX_PASS == TC_ACT_OK, TCX_DROP ==
 * TC_ACT_SHOT).
 */
#ifndef PVE_EBPF_TCX_H
#define PVE_EBPF_TCX_H

#include <linux/pkt_cls.h>

/* Let the next program on the hook (and the PVE firewall) decide. */
#define MS_TCX_NEXT TC_ACT_UNSPEC
/* Drop the packet here. */
#define MS_TCX_DROP TC_ACT_SHOT

#endif
