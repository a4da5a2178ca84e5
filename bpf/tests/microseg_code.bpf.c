// SPDX-License-Identifier: GPL-2.0-only
/*
 * Test object: the production data plane plus one more (never loaded)
 * program. Same maps and programs, other bytes: a code-only change, for the
 * atomic program swap tests.
 */
#include "../microseg.bpf.c"

SEC("classifier/microseg_test_extra")
int microseg_test_extra(struct __sk_buff *skb)
{
	return MS_TCX_NEXT;
}
