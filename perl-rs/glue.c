/*
 * XS glue for PVE::RS::SDN::Microseg: argument checking, return values and
 * croak. All work is done in Rust (src/lib.rs), which never sees a Perl
 * value and never unwinds into C; this file never holds Rust state across a
 * croak (croak longjmps, so every Rust allocation is freed first).
 *
 * Built by build.rs against perl's own headers and ccflags; not linked
 * against libperl: the Perl_* symbols resolve inside the perl process.
 */
#define PERL_NO_GET_CONTEXT
#include "EXTERN.h"
#include "perl.h"
#include "XSUB.h"

#include <stdint.h>

/* As ExtUtils::ParseXS emits it: the short name exists only inside the core. */
#ifndef newXS_deffile
#define newXS_deffile(a, b) Perl_newXS_deffile(aTHX_ a, b)
#endif

/* Mirrors `Report` in src/lib.rs. */
struct ms_report {
	uint32_t loaded;
	uint32_t map_writes;
	uint32_t map_deletes;
	uint32_t links_created;
	uint32_t links_updated;
	uint32_t links_detached;
	uint32_t nics;
};

/* Rust entry points: 0 on success; on failure *err is a NUL-terminated
 * message owned by Rust, released with microseg_rs_free(). */
extern int microseg_rs_apply_full(struct ms_report *report, char **err);
extern int microseg_rs_apply_iface(const char *name, size_t len, const char **outcome,
				   struct ms_report *report, char **err);
extern int microseg_rs_clear(char **err);
extern int microseg_rs_effective_policy(char **json, char **err);
extern int microseg_rs_test_panic(char **err);
extern void microseg_rs_free(char *err);

/* Copies the Rust message into a mortal SV, frees it, then croaks. */
static void croak_rust(pTHX_ char *err)
{
	SV *msg = sv_2mortal(newSVpv(err ? err : "microseg: unknown error\n", 0));

	microseg_rs_free(err);
	croak_sv(msg);
}

static SV *report_hv(pTHX_ const struct ms_report *r)
{
	HV *hv = newHV();

	hv_stores(hv, "loaded", newSVuv(r->loaded));
	hv_stores(hv, "map_writes", newSVuv(r->map_writes));
	hv_stores(hv, "map_deletes", newSVuv(r->map_deletes));
	hv_stores(hv, "links_created", newSVuv(r->links_created));
	hv_stores(hv, "links_updated", newSVuv(r->links_updated));
	hv_stores(hv, "links_detached", newSVuv(r->links_detached));
	hv_stores(hv, "nics", newSVuv(r->nics));
	return newRV_noinc((SV *)hv);
}

XS(XS_apply_full);
XS(XS_apply_full)
{
	dXSARGS;
	struct ms_report report = { 0 };
	char *err = NULL;

	if (items != 0)
		croak_xs_usage(cv, "");
	if (microseg_rs_apply_full(&report, &err) != 0)
		croak_rust(aTHX_ err);
	ST(0) = sv_2mortal(report_hv(aTHX_ &report));
	XSRETURN(1);
}

XS(XS_apply_iface);
XS(XS_apply_iface)
{
	dXSARGS;
	struct ms_report report = { 0 };
	const char *outcome = NULL;
	const char *name;
	char *err = NULL;
	STRLEN len;
	SV *sv;

	if (items != 1)
		croak_xs_usage(cv, "iface");
	sv = ST(0);
	if (!SvOK(sv))
		croak("Usage: PVE::RS::SDN::Microseg::apply_iface(iface): iface is undefined\n");
	if (SvROK(sv))
		croak("Usage: PVE::RS::SDN::Microseg::apply_iface(iface): iface must be a string, not a reference\n");
	/*
	 * Guest NIC names are ASCII, so the byte encoding does not matter for
	 * them; UTF-8 never croaks on wide characters. A mortal copy leaves the
	 * caller's scalar as it was.
	 */
	name = SvPVutf8(sv_mortalcopy(sv), len);
	if (microseg_rs_apply_iface(name, len, &outcome, &report, &err) != 0)
		croak_rust(aTHX_ err);
	ST(0) = sv_2mortal(newSVpv(outcome, 0));
	XSRETURN(1);
}

XS(XS_clear);
XS(XS_clear)
{
	dXSARGS;
	char *err = NULL;

	if (items != 0)
		croak_xs_usage(cv, "");
	if (microseg_rs_clear(&err) != 0)
		croak_rust(aTHX_ err);
	XSRETURN_EMPTY;
}

XS(XS_effective_policy);
XS(XS_effective_policy)
{
	dXSARGS;
	char *json = NULL;
	char *err = NULL;
	SV *ret;

	if (items != 0)
		croak_xs_usage(cv, "");
	if (microseg_rs_effective_policy(&json, &err) != 0)
		croak_rust(aTHX_ err);
	ret = newSVpv(json, 0);
	microseg_rs_free(json);
	SvUTF8_on(ret);
	ST(0) = sv_2mortal(ret);
	XSRETURN(1);
}

XS(XS_test_panic);
XS(XS_test_panic)
{
	dXSARGS;
	char *err = NULL;

	if (items != 0)
		croak_xs_usage(cv, "");
	if (microseg_rs_test_panic(&err) != 0)
		croak_rust(aTHX_ err);
	XSRETURN_EMPTY;
}

/*
 * Called from the Rust-defined boot_PVE__RS__SDN__Microseg (rustc keeps only
 * Rust symbols in a cdylib's export list). The handshake checks the perl API
 * and that the module's $VERSION equals XS_VERSION: a stale .so is refused.
 */
void microseg_glue_boot(pTHX_ CV *cv);
void microseg_glue_boot(pTHX_ CV *cv)
{
	dXSBOOTARGSXSAPIVERCHK;
	PERL_UNUSED_VAR(cv);
	PERL_UNUSED_VAR(items);

	newXS_deffile("PVE::RS::SDN::Microseg::apply_full", XS_apply_full);
	newXS_deffile("PVE::RS::SDN::Microseg::apply_iface", XS_apply_iface);
	newXS_deffile("PVE::RS::SDN::Microseg::clear", XS_clear);
	newXS_deffile("PVE::RS::SDN::Microseg::effective_policy_json", XS_effective_policy);
	newXS_deffile("PVE::RS::SDN::Microseg::_test_panic", XS_test_panic);
	Perl_xs_boot_epilog(aTHX_ ax);
}
