// SPDX-License-Identifier: GPL-2.0-only
/*
 * Test object: another map layout, and a microseg_enforce the verifier
 * rejects, so that a failed layout change can be shown to leave the old
 * state in force. The production program is renamed out of the way; the
 * loader finds programs by function name.
 */
#define MICROSEG_RULES_MAX 2048
#define microseg_enforce microseg_enforce_production
#include "../microseg.bpf.c"
#undef microseg_enforce

SEC("classifier/microseg_enforce_broken")
int microseg_enforce(struct __sk_buff *skb)
{
	struct nic_key key = { .ifindex = skb->ifindex };
	struct nic_value *value = bpf_map_lookup_elem(&tap_to_group, &key);

	/* No NULL check: rejected by the verifier, on purpose. */
	return value->mark ? MS_TCX_NEXT : MS_TCX_DROP;
}
