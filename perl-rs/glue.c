/*
 * XS glue for PVE::RS::SDN::Microseg. Every Perl function is the same XSUB,
 * XS_dispatch, registered once per row of Rust's function table with the
 * row's index in XSANY: it reads the arguments (get-magic first, so $1,
 * substrings, tied and overloaded values behave as their string), calls
 * Rust, turns the one encoded value Rust hands back into Perl values, frees
 * it, raises the call's warnings with warn(), and then returns or croaks.
 * Rust never sees a Perl value and never unwinds into C; nothing Rust owns
 * is alive when warn() or croak() may longjmp.
 *
 * Built by build.rs against perl's own headers and ccflags; not linked
 * against libperl: the Perl_* symbols resolve inside the perl process.
 */
#define PERL_NO_GET_CONTEXT
#include "EXTERN.h"
#include "perl.h"
#include "XSUB.h"

#include <stdint.h>
#include <string.h>

/* As ExtUtils::ParseXS emits it: the short name exists only inside the core. */
#ifndef newXS_deffile
#define newXS_deffile(a, b) Perl_newXS_deffile(aTHX_ a, b)
#endif

/* Mirrors MsArg and MsBuf in src/lib.rs. */
struct ms_arg {
	const char *ptr;
	size_t len;
	uint32_t kind; /* 0 undef, 1 string, 2 reference */
};

struct ms_buf {
	unsigned char *ptr;
	size_t len;
	size_t cap;
};

extern const char *microseg_rs_function(uint32_t index);
extern int microseg_rs_call(uint32_t index, const struct ms_arg *args, size_t args_len, size_t argc,
			    struct ms_buf *out);
extern void microseg_rs_free_buf(struct ms_buf buf);

/* No Perl function takes more; Rust refuses a call with more (usage). */
#define MS_MAX_ARGS 8
/* Deeper trees than this are not built (Rust's results are a few levels). */
#define MS_MAX_DEPTH 64

struct reader {
	const unsigned char *p;
	const unsigned char *end;
};

static int read_u64(struct reader *r, uint64_t *v)
{
	int i;

	if ((size_t)(r->end - r->p) < 8)
		return 0;
	*v = 0;
	for (i = 7; i >= 0; i--)
		*v = (*v << 8) | r->p[i];
	r->p += 8;
	return 1;
}

static int read_bytes(struct reader *r, const char **s, STRLEN *len)
{
	uint64_t n;

	if (!read_u64(r, &n) || n > (uint64_t)(r->end - r->p))
		return 0;
	*s = (const char *)r->p;
	*len = (STRLEN)n;
	r->p += n;
	return 1;
}

/* Builds the value at r (see value.rs for the encoding); NULL if malformed. */
static SV *decode(pTHX_ struct reader *r, int depth)
{
	uint64_t n, i;
	const char *s;
	STRLEN len;
	SV *sv, *item;
	AV *av;
	HV *hv;
	double d;

	if (depth > MS_MAX_DEPTH || r->p >= r->end)
		return NULL;
	switch (*r->p++) {
	case 'u':
		return newSV(0);
	case 'i':
		return read_u64(r, &n) ? newSViv((IV)(int64_t)n) : NULL;
	case 'U':
		return read_u64(r, &n) ? newSVuv((UV)n) : NULL;
	case 'n':
		if (!read_u64(r, &n))
			return NULL;
		memcpy(&d, &n, sizeof(d));
		return newSVnv(d);
	case 's':
		if (!read_bytes(r, &s, &len))
			return NULL;
		sv = newSVpvn(s, len);
		SvUTF8_on(sv);
		return sv;
	case 'a':
		if (!read_u64(r, &n))
			return NULL;
		av = newAV();
		for (i = 0; i < n; i++) {
			if (!(item = decode(aTHX_ r, depth + 1))) {
				SvREFCNT_dec((SV *)av);
				return NULL;
			}
			av_push(av, item);
		}
		return newRV_noinc((SV *)av);
	case 'h':
		if (!read_u64(r, &n))
			return NULL;
		hv = newHV();
		for (i = 0; i < n; i++) {
			if (!read_bytes(r, &s, &len) || !(item = decode(aTHX_ r, depth + 1))) {
				SvREFCNT_dec((SV *)hv);
				return NULL;
			}
			/* Negative length: the key is UTF-8. */
			(void)hv_store(hv, s, -(I32)len, item, 0);
		}
		return newRV_noinc((SV *)hv);
	default:
		return NULL;
	}
}

XS(XS_dispatch);
XS(XS_dispatch)
{
	dXSARGS;
	dXSI32;
	struct ms_arg args[MS_MAX_ARGS];
	struct ms_buf buf = { NULL, 0, 0 };
	struct reader r;
	size_t nargs = items < MS_MAX_ARGS ? (size_t)items : MS_MAX_ARGS;
	SV *tree, *first, *copy;
	AV *pair, *warnings;
	SSize_t i;
	int rc;

	for (i = 0; i < (SSize_t)nargs; i++) {
		SV *sv = ST(i);
		STRLEN len;

		/* Fetch tied and match-variable values once, then read without magic. */
		SvGETMAGIC(sv);
		args[i].ptr = NULL;
		args[i].len = 0;
		if (!SvOK(sv)) {
			args[i].kind = 0;
		} else if (SvROK(sv) && !SvAMAGIC(sv)) {
			args[i].kind = 2;
		} else {
			/*
			 * A mortal copy without get-magic (done above) leaves the
			 * caller's scalar as it was; string overloading runs here.
			 * UTF-8 never croaks on wide characters.
			 */
			copy = sv_mortalcopy_flags(sv, SV_NOSTEAL);
			args[i].ptr = SvPVutf8(copy, len);
			args[i].len = len;
			args[i].kind = 1;
		}
	}
	rc = microseg_rs_call((uint32_t)ix, args, nargs, (size_t)items, &buf);

	r.p = buf.ptr;
	r.end = buf.ptr + buf.len;
	tree = decode(aTHX_ &r, 0);
	microseg_rs_free_buf(buf);
	if (!tree)
		croak("microseg: internal error: malformed result from the library\n");
	sv_2mortal(tree);
	pair = (AV *)SvRV(tree);
	first = *av_fetch(pair, 0, 0);
	warnings = (AV *)SvRV(*av_fetch(pair, 1, 0));

	/* Raise the call's warnings: they reach $SIG{__WARN__} and the task log. */
	for (i = 0; i <= av_len(warnings); i++)
		warn_sv(sv_mortalcopy(*av_fetch(warnings, i, 0)));
	if (rc != 0)
		croak_sv(sv_mortalcopy(first));
	if (!SvOK(first))
		XSRETURN_EMPTY;
	ST(0) = sv_mortalcopy(first);
	XSRETURN(1);
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
	const char *name;
	uint32_t i;
	PERL_UNUSED_VAR(cv);
	PERL_UNUSED_VAR(items);

	for (i = 0; (name = microseg_rs_function(i)) != NULL; i++) {
		SV *full = sv_2mortal(newSVpvf("PVE::RS::SDN::Microseg::%s", name));
		CV *xs = newXS_deffile(SvPV_nolen(full), XS_dispatch);

		CvXSUBANY(xs).any_i32 = (I32)i;
	}
	Perl_xs_boot_epilog(aTHX_ ax);
}
