// SPDX-License-Identifier: GPL-2.0-only
/*
 * Test object: the production data plane with other map capacities (4 NICs,
 * 4096 pairs), for the layout change and capacity tests.
 */
#define MICROSEG_TAP_MAX 4
#define MICROSEG_RULES_MAX 4096
#include "../microseg.bpf.c"
