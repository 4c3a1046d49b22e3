// SPDX-License-Identifier: MIT
/*
 * vnetd.backends._xtables: the iptables rule language, compiled and printed by
 * libxtables exactly as the iptables command does it.
 *
 * Why C: iptables' meaning of a rule is not in a library function one could call.
 * It is a getopt_long loop (in the iptables binary) over the words of the rule,
 * in which each "-m" loads an extension and merges its options into the option
 * table, each unknown option goes to whichever loaded extension owns it (or loads
 * the protocol's match implicitly), multi-word options read argv themselves, and
 * errors leave through xt_params->exit_err, which must never return. After the
 * loop every extension's final check runs (mandatory, "also" and mutually
 * exclusive options), then the addresses are parsed. This module runs that same
 * loop, over the same libxtables, with glibc's own getopt_long: abbreviations,
 * option ownership, revisions (asked of the kernel), aliases (NOTRACK is CT,
 * state is conntrack) and error messages are iptables' own.
 *
 * Errors: exit_err formats the message and longjmps back to the entry point;
 * every entry point resets libxtables' per-rule state before and after. Nothing
 * here ever exits the process or runs a program: the kernel's revision support is
 * asked with getsockopt (libxtables' own helper may run modprobe), extension
 * names are checked before libxtables builds a library path from them, and the
 * extension directory is the system's (XTABLES_LIBDIR is ignored).
 *
 * Both families: compile() and render() take 4 (iptables, struct ipt_entry) or 6
 * (ip6tables, struct ip6t_entry), and run the parts that differ as ip6tables does
 * them (-p sets IP6T_F_PROTO and warns about extension headers, -f is refused,
 * addresses are IPv6, goto is IP6T_F_GOTO). libxtables serves one family at a
 * time: a target extension registers only the variants of the family loaded when
 * its library is opened, so switching family unloads every extension library
 * and loads them again for the other family (select_family).
 *
 * extension() answers what one extension offers (its long options, its help
 * text, captured as save output is), for the "did you mean" of rule errors
 * (vnetd/backends/rulehints.py), in either family; it is guarded and resets the
 * state like the rest.
 *
 * Not thread-safe (getopt and libxtables keep global state): callers hold the GIL
 * and this module never releases it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* dl_iterate_phdr: _GNU_SOURCE, which Python.h defines */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <link.h>
#include <getopt.h>
#include <netdb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <net/if.h> /* before the kernel headers: glibc's definitions win (libc-compat) */
#include <xtables.h>
#include <linux/netfilter_ipv4/ip_tables.h>
#include <linux/netfilter_ipv6/ip6_tables.h>

/* libxtables' lists of extensions; the pending ones are exported but not declared in xtables.h */
extern struct xtables_match *xtables_pending_matches;
extern struct xtables_target *xtables_pending_targets;

#define VX_ERRLEN 1024
/* each extension's getopt ids start at a multiple of this (libxtables' private xshared.h) */
#define XT_OPTION_OFFSET_SCALE 256
#define VX_MAX_ARGS 512
#define VX_MAX_ENTRIES 256 /* kernel entries one rule may expand to (-s a,b,c) */

/* what a rule may set once (iptables' OPT_* bits for the rule options) */
enum {
    VX_OPT_SOURCE = 1 << 0,
    VX_OPT_DESTINATION = 1 << 1,
    VX_OPT_PROTOCOL = 1 << 2,
    VX_OPT_JUMP = 1 << 3,
    VX_OPT_VIANAMEIN = 1 << 4,
    VX_OPT_VIANAMEOUT = 1 << 5,
    VX_OPT_FRAGMENT = 1 << 6,
    VX_OPT_COUNTERS = 1 << 7,
};

/* The global options of the iptables command, so that getopt_long resolves
 * abbreviations and ambiguities of extension options exactly as iptables does.
 * Those that are not part of a rule are refused in the loop. */
static struct option vx_orig_opts[] = {
    {"append", 1, NULL, 'A'},       {"delete", 1, NULL, 'D'},
    {"check", 1, NULL, 'C'},        {"insert", 1, NULL, 'I'},
    {"replace", 1, NULL, 'R'},      {"list", 2, NULL, 'L'},
    {"list-rules", 2, NULL, 'S'},   {"flush", 2, NULL, 'F'},
    {"zero", 2, NULL, 'Z'},         {"new-chain", 1, NULL, 'N'},
    {"delete-chain", 2, NULL, 'X'}, {"rename-chain", 1, NULL, 'E'},
    {"policy", 1, NULL, 'P'},       {"source", 1, NULL, 's'},
    {"destination", 1, NULL, 'd'},  {"src", 1, NULL, 's'},
    {"dst", 1, NULL, 'd'},          {"protocol", 1, NULL, 'p'},
    {"in-interface", 1, NULL, 'i'}, {"jump", 1, NULL, 'j'},
    {"table", 1, NULL, 't'},        {"match", 1, NULL, 'm'},
    {"numeric", 0, NULL, 'n'},      {"out-interface", 1, NULL, 'o'},
    {"verbose", 0, NULL, 'v'},      {"wait", 2, NULL, 'w'},
    {"wait-interval", 2, NULL, 'W'}, {"exact", 0, NULL, 'x'},
    {"fragments", 0, NULL, 'f'},    {"version", 0, NULL, 'V'},
    {"help", 2, NULL, 'h'},         {"line-numbers", 0, NULL, '0'},
    {"modprobe", 1, NULL, 'M'},     {"set-counters", 1, NULL, 'c'},
    {"goto", 1, NULL, 'g'},         {"ipv4", 0, NULL, '4'},
    {"ipv6", 0, NULL, '6'},         {NULL, 0, NULL, 0},
};
/* iptables' short options: a leading '-' returns non-options ("!") in order */
static const char vx_optstring[] =
    "-:A:C:D:E:F::I:L::M:N:P:VX::Z::c:d:i:j:o:p:s:t:R:S::W::46bfg:h::m:nvw::x";

static void vx_exit_err(enum xtables_exittype status, const char *msg, ...)
    __attribute__((noreturn, format(printf, 2, 3)));
static int vx_compat_rev(const char *name, uint8_t revision, int opt);

static struct xtables_globals vx_globals = {
    .option_offset = 0,
    .program_name = "iptables",
    .program_version = XTABLES_VERSION,
    .orig_opts = vx_orig_opts,
    .exit_err = vx_exit_err,
    .compat_rev = vx_compat_rev,
};

static int vx_family;            /* 4 or 6: the family libxtables' extensions are loaded for; 0 before init */
static jmp_buf *vx_jump;         /* where exit_err returns to; NULL outside a guarded call */
static char vx_error[VX_ERRLEN]; /* the last error message */
static bool vx_ready;
static PyObject *CompileError;

static void vx_exit_err(enum xtables_exittype status, const char *msg, ...)
{
    va_list ap;
    size_t len;

    va_start(ap, msg);
    vsnprintf(vx_error, sizeof(vx_error), msg, ap);
    va_end(ap);
    len = strlen(vx_error);
    while (len > 0 && (vx_error[len - 1] == '\n' || vx_error[len - 1] == ' '))
        vx_error[--len] = '\0';
    if (vx_jump != NULL)
        longjmp(*vx_jump, status ? (int)status : 1);
    /* Unreachable by construction (every entry point is guarded); never exit. */
    fprintf(stderr, "vnetd: libxtables error outside a guarded call: %s\n", vx_error);
    abort();
}

/* Like libxtables' xtables_compatible_revision, without ever running modprobe
 * or exiting: ask the kernel whether it supports this revision. */
static int vx_compat_rev(const char *name, uint8_t revision, int opt)
{
    struct xt_get_revision rev;
    socklen_t len = sizeof(rev);
    int fd, ret, err;

    if (strlen(name) >= sizeof(rev.name))
        return 0;
    /* opt is IPT_ or IP6T_SO_GET_REVISION_MATCH/TARGET (libxtables' afinfo of the family) */
    fd = socket(vx_family == 6 ? AF_INET6 : AF_INET, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW);
    if (fd < 0)
        return 1; /* not allowed to ask (not root): assume it is, as iptables does */
    memset(&rev, 0, sizeof(rev));
    strcpy(rev.name, name);
    rev.revision = revision;
    ret = getsockopt(fd, vx_family == 6 ? IPPROTO_IPV6 : IPPROTO_IP, opt, &rev, &len);
    err = errno;
    close(fd);
    if (ret >= 0)
        return 1;
    if (err == ENOENT || err == EPROTONOSUPPORT)
        return 0;
    if (err == ENOPROTOOPT)
        return revision == 0; /* ip_tables / ip6_tables not loaded: only revision 0 is certain */
    return 1;
}

/* ------------------------------------------------------------------ capture */

/* Extensions print warnings to stderr and save() functions print to stdout:
 * both are swapped for memory streams while libxtables runs. */
struct vx_capture {
    FILE *saved;
    FILE *stream;
    char *buf;
    size_t len;
};

static bool capture_start(struct vx_capture *cap, FILE **which)
{
    cap->buf = NULL;
    cap->len = 0;
    cap->stream = open_memstream(&cap->buf, &cap->len);
    if (cap->stream == NULL)
        return false;
    cap->saved = *which;
    fflush(*which);
    *which = cap->stream;
    return true;
}

static void capture_stop(struct vx_capture *cap, FILE **which)
{
    fflush(cap->stream);
    *which = cap->saved;
    fclose(cap->stream);
}

/* ------------------------------------------------------------------ state */

struct vx_rule {
    int family;            /* 4 or 6 */
    struct ipt_entry fw;   /* the rule's header, IPv4 */
    struct ip6t_entry fw6; /* the rule's header, IPv6 */
    /* the header fields of the rule's family (in fw or fw6), and the header itself,
     * which the extensions' parsers get (they read the protocol there) */
    void *entry;
    uint16_t *proto;
    uint8_t *flags, *invflags;
    char *iniface, *outiface;
    unsigned char *iniface_mask, *outiface_mask;
    struct xt_counters *counters;
    struct xtables_rule_match *matches;
    struct xtables_target *target;
    const char *jumpto;
    char *protocol;
    bool proto_used;
    bool goto_set;
    bool jump_is_chain;
    bool wait_set, wait_interval_set;
    unsigned int options;
    int c;
    char **argv;
    const char *shost;
    const char *dhost;
    struct in_addr *saddrs, *smasks, *daddrs, *dmasks;
    struct in6_addr *saddrs6, *smasks6, *daddrs6, *dmasks6;
    unsigned int nsaddrs, ndaddrs;
    PyObject *chains; /* names that are chains in this table (a set), or Py_None */
};

static void rule_init(struct vx_rule *r, int family)
{
    r->family = family;
    if (family == 6) {
        r->entry = &r->fw6;
        r->proto = &r->fw6.ipv6.proto;
        r->flags = &r->fw6.ipv6.flags;
        r->invflags = &r->fw6.ipv6.invflags;
        r->iniface = r->fw6.ipv6.iniface;
        r->outiface = r->fw6.ipv6.outiface;
        r->iniface_mask = r->fw6.ipv6.iniface_mask;
        r->outiface_mask = r->fw6.ipv6.outiface_mask;
        r->counters = &r->fw6.counters;
    } else {
        r->entry = &r->fw;
        r->proto = &r->fw.ip.proto;
        r->flags = &r->fw.ip.flags;
        r->invflags = &r->fw.ip.invflags;
        r->iniface = r->fw.ip.iniface;
        r->outiface = r->fw.ip.outiface;
        r->iniface_mask = r->fw.ip.iniface_mask;
        r->outiface_mask = r->fw.ip.outiface_mask;
        r->counters = &r->fw.counters;
    }
}

static void reset_extensions(void)
{
    struct xtables_match *m;
    struct xtables_target *t;

    for (m = xtables_matches; m != NULL; m = m->next)
        m->mflags = 0;
    for (t = xtables_targets; t != NULL; t = t->next) {
        t->tflags = 0;
        t->used = 0;
    }
}

static void rule_free(struct vx_rule *r)
{
    xtables_rule_matches_free(&r->matches);
    if (r->target != NULL) {
        free(r->target->t);
        r->target->t = NULL;
        free(r->target->udata);
        r->target->udata = NULL;
        if (r->target == r->target->next)
            free(r->target);
        r->target = NULL;
    }
    free(r->saddrs);
    free(r->smasks);
    free(r->daddrs);
    free(r->dmasks);
    r->saddrs = r->smasks = r->daddrs = r->dmasks = NULL;
    free(r->saddrs6);
    free(r->smasks6);
    free(r->daddrs6);
    free(r->dmasks6);
    r->saddrs6 = r->smasks6 = r->daddrs6 = r->dmasks6 = NULL;
    xtables_free_opts(1);
    reset_extensions();
}

static bool is_chain(struct vx_rule *r, const char *name)
{
    PyObject *key;
    int found;

    if (r->chains == NULL || r->chains == Py_None)
        return false;
    key = PyUnicode_FromString(name);
    if (key == NULL) {
        PyErr_Clear();
        return false;
    }
    found = PySequence_Contains(r->chains, key);
    Py_DECREF(key);
    if (found < 0) {
        PyErr_Clear();
        return false;
    }
    return found == 1;
}

/* Extension names become part of a library path (libxt_NAME.so): letters,
 * digits, '_' and '-' only. */
static void check_extension_name(const char *what, const char *name)
{
    const char *p;

    if (*name == '\0')
        xtables_error(PARAMETER_PROBLEM, "%s name is empty", what);
    for (p = name; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
            xtables_error(PARAMETER_PROBLEM, "%s name \"%s\" contains \"%c\"", what, name, *p);
}

static void set_option(struct vx_rule *r, unsigned int option, char letter, uint8_t invflag,
                       bool invert)
{
    if (r->options & option)
        xtables_error(PARAMETER_PROBLEM, "multiple -%c flags not allowed", letter);
    r->options |= option;
    if (invert) {
        if (invflag == 0)
            xtables_error(PARAMETER_PROBLEM, "cannot have ! before -%c", letter);
        *r->invflags |= invflag;
    }
}

static void init_match(struct xtables_match *m)
{
    if (m->udata_size != 0) {
        free(m->udata);
        m->udata = xtables_calloc(1, m->udata_size);
    }
    if (m->init != NULL)
        m->init(m->m);
}

static void init_target(struct xtables_target *t)
{
    if (t->udata_size != 0) {
        free(t->udata);
        t->udata = xtables_calloc(1, t->udata_size);
    }
    if (t->init != NULL)
        t->init(t->t);
}

static void merge_options(unsigned int *offset, const struct xt_option_entry *x6,
                          const struct option *extra)
{
    struct option *opts = xt_params->opts;

    if (x6 != NULL)
        opts = xtables_options_xfrm(xt_params->orig_opts, opts, x6, offset);
    else if (extra != NULL)
        opts = xtables_merge_options(xt_params->orig_opts, opts, extra, offset);
    if (opts == NULL)
        xtables_error(OTHER_PROBLEM, "can't alloc memory!");
    xt_params->opts = opts;
}

static void command_match(struct vx_rule *r, bool invert)
{
    struct xtables_match *m;
    size_t size;

    if (invert)
        xtables_error(PARAMETER_PROBLEM, "unexpected ! flag before --match");
    check_extension_name("match", optarg);
    m = xtables_find_match(optarg, XTF_LOAD_MUST_SUCCEED, &r->matches);
    size = XT_ALIGN(sizeof(struct xt_entry_match)) + m->size;
    m->m = xtables_calloc(1, size);
    m->m->u.match_size = size;
    strcpy(m->m->u.user.name, m->real_name != NULL ? m->real_name : m->name);
    if (m->real_name != NULL && !(m->ext_flags & XTABLES_EXT_ALIAS))
        fprintf(stderr, "Notice: the %s match is converted into %s match "
                "in rule listing and saving.\n", m->name, m->real_name);
    m->m->u.user.revision = m->revision;
    init_match(m);
    if (m == m->next)
        return; /* a second instance of a match shares the first one's options */
    merge_options(&m->option_offset, m->x6_options, m->extra_opts);
}

static const char *target_name(const char *name)
{
    const char *p;

    if (strlen(name) < 1)
        xtables_error(PARAMETER_PROBLEM, "Invalid target name (too short)");
    if (strlen(name) >= XT_EXTENSION_MAXNAMELEN)
        xtables_error(PARAMETER_PROBLEM, "Invalid target name `%s' (%u chars max)",
                      name, XT_EXTENSION_MAXNAMELEN - 1);
    for (p = name; *p; p++)
        if (isspace((unsigned char)*p))
            xtables_error(PARAMETER_PROBLEM, "Invalid target name `%s'", name);
    return name;
}

static void command_jump(struct vx_rule *r, const char *jumpto)
{
    struct xtables_target *t;
    size_t size;
    const char *p;
    bool loadable = true;

    r->jumpto = target_name(jumpto);
    /* a chain of that name wins over an extension, as in iptables ("using
     * chain, not extension"); names that cannot be a library are chains */
    for (p = jumpto; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-')
            loadable = false;
    if (is_chain(r, jumpto) || !loadable) {
        r->jump_is_chain = true;
        return;
    }
    t = xtables_find_target(jumpto, XTF_TRY_LOAD);
    if (t == NULL)
        return; /* maybe a chain: decided after the loop */
    r->target = t;
    size = XT_ALIGN(sizeof(struct xt_entry_target)) + t->size;
    t->t = xtables_calloc(1, size);
    t->t->u.target_size = size;
    if (t->real_name == NULL) {
        strcpy(t->t->u.user.name, jumpto);
    } else {
        strcpy(t->t->u.user.name, t->real_name);
        if (!(t->ext_flags & XTABLES_EXT_ALIAS))
            fprintf(stderr, "Notice: The %s target is converted into %s target "
                    "in rule listing and saving.\n", jumpto, t->real_name);
    }
    t->t->u.user.revision = t->revision;
    init_target(t);
    merge_options(&t->option_offset, t->x6_options, t->extra_opts);
}

static struct xtables_match *find_proto(const char *pname, enum xtables_tryload tryload,
                                        struct xtables_rule_match **matches)
{
    unsigned int proto;
    const char *name = NULL;
    unsigned int i;

    if (xtables_strtoui(pname, NULL, &proto, 0, UINT8_MAX)) {
        for (i = 0; xtables_chain_protos[i].name != NULL; ++i)
            if (xtables_chain_protos[i].num == proto) {
                name = xtables_chain_protos[i].name;
                break;
            }
        if (name == NULL && proto != 0) {
            struct protoent *pent = getprotobynumber(proto);
            if (pent != NULL)
                name = pent->p_name;
        }
        if (name == NULL)
            return NULL;
    } else {
        name = pname;
    }
    for (i = 0; name[i]; i++)
        if (!isalnum((unsigned char)name[i]) && name[i] != '_' && name[i] != '-')
            return NULL; /* not a possible extension name */
    return xtables_find_match(name, tryload, matches);
}

/* '-p tcp' also means "load the tcp match if an option nobody owns follows" */
static struct xtables_match *load_proto(struct vx_rule *r)
{
    if (r->protocol == NULL)
        return NULL;
    if (find_proto(r->protocol, XTF_DONT_LOAD, NULL) != NULL && r->proto_used)
        return NULL;
    return find_proto(r->protocol, XTF_TRY_LOAD, &r->matches);
}

static int command_default(struct vx_rule *r, bool invert)
{
    struct xtables_rule_match *mp;
    struct xtables_target *t = r->target;
    struct xtables_match *m;

    if (t != NULL && (t->parse != NULL || t->x6_parse != NULL) &&
        r->c >= (int)t->option_offset && r->c < (int)(t->option_offset + XT_OPTION_OFFSET_SCALE)) {
        xtables_option_tpcall(r->c, r->argv, invert, t, r->entry);
        return 0;
    }
    for (mp = r->matches; mp != NULL; mp = mp->next) {
        m = mp->match;
        if (mp->completed || (m->x6_parse == NULL && m->parse == NULL))
            continue;
        if (r->c < (int)m->option_offset || r->c >= (int)(m->option_offset + XT_OPTION_OFFSET_SCALE))
            continue;
        xtables_option_mpcall(r->c, r->argv, invert, m, r->entry);
        return 0;
    }
    m = load_proto(r);
    if (m != NULL) {
        size_t size = XT_ALIGN(sizeof(struct xt_entry_match)) + m->size;

        r->proto_used = true;
        m->m = xtables_calloc(1, size);
        m->m->u.match_size = size;
        strcpy(m->m->u.user.name, m->name);
        m->m->u.user.revision = m->revision;
        init_match(m);
        merge_options(&m->option_offset, m->x6_options, m->extra_opts);
        optind--; /* run getopt again on the same word, now that the match knows it */
        return 1;
    }
    if (r->c == ':')
        xtables_error(PARAMETER_PROBLEM, "option \"%s\" requires an argument", r->argv[optind - 1]);
    if (r->c == '?')
        xtables_error(PARAMETER_PROBLEM, "unknown option \"%s\"", r->argv[optind - 1]);
    xtables_error(PARAMETER_PROBLEM, "Unknown arg \"%s\"", optarg);
    return 0;
}

static void parse_counters(struct vx_rule *r, int argc, char **argv)
{
    const char *pcnt = optarg;
    const char *bcnt = strchr(pcnt + 1, ',');

    if (bcnt != NULL)
        bcnt++;
    if (bcnt == NULL && optind < argc && argv[optind][0] != '-' && argv[optind][0] != '!')
        bcnt = argv[optind++];
    if (bcnt == NULL)
        xtables_error(PARAMETER_PROBLEM, "-c requires packet and byte counter");
    if (sscanf(pcnt, "%llu", (unsigned long long *)&r->counters->pcnt) != 1)
        xtables_error(PARAMETER_PROBLEM, "-c packet counter not numeric");
    if (sscanf(bcnt, "%llu", (unsigned long long *)&r->counters->bcnt) != 1)
        xtables_error(PARAMETER_PROBLEM, "-c byte counter not numeric");
}

/* Addresses only: iptables would resolve a host name through DNS, once, and a
 * name in a firewall rule silently changes meaning when its address does. */
static void parse_addresses(const char *spec, struct in_addr **addrs, struct in_addr **masks,
                            unsigned int *n)
{
    char buf[256];
    const char *item = spec;

    while (item != NULL && *item != '\0') {
        const char *end = strchr(item, ',');
        size_t len = end != NULL ? (size_t)(end - item) : strlen(item);
        char *slash;

        if (len >= sizeof(buf))
            xtables_error(PARAMETER_PROBLEM, "address \"%.40s...\" is too long", item);
        memcpy(buf, item, len);
        buf[len] = '\0';
        slash = strchr(buf, '/');
        if (slash != NULL)
            *slash = '\0';
        {
            struct in_addr numeric; /* every form inet_aton reads (1.2.3.4, 3232235777, 0x0a000001): no DNS */

            if (inet_aton(buf, &numeric) == 0)
                xtables_error(PARAMETER_PROBLEM, "host/network `%s' is not an IPv4 address "
                              "(vnetd does not resolve host names: write the address)", buf);
        }
        item = end != NULL ? end + 1 : NULL;
    }
    xtables_ipparse_multiple(spec, addrs, masks, n);
}

/* The mask part of an IPv6 address item is zero ("anything/0"), in which case
 * libxtables ignores the name; or it is malformed, which libxtables reports. */
static bool ip6_mask_ignores_name(const char *mask)
{
    struct in6_addr m;
    unsigned int bits;
    size_t i;

    if (inet_pton(AF_INET6, mask, &m) == 1) {
        for (i = 0; i < sizeof(m.s6_addr); i++)
            if (m.s6_addr[i] != 0)
                return false;
        return true;
    }
    if (!xtables_strtoui(mask, NULL, &bits, 0, 128))
        return true; /* "invalid mask": libxtables says so */
    return bits == 0;
}

/* IPv6 addresses only, for the same reason; each item is read as
 * xtables_ip6parse_multiple reads it (leading blanks skipped, the mask after the
 * last '/', the name ignored under a zero mask). */
static void parse_addresses6(const char *spec, struct in6_addr **addrs, struct in6_addr **masks,
                             unsigned int *n)
{
    char buf[256];
    const char *item = spec;

    while (item != NULL) {
        const char *end;
        size_t len;
        char *slash;
        struct in6_addr numeric;

        while (isspace((unsigned char)*item))
            item++;
        end = strchr(item, ',');
        len = end != NULL ? (size_t)(end - item) : strlen(item);
        if (len >= sizeof(buf))
            xtables_error(PARAMETER_PROBLEM, "address \"%.40s...\" is too long", item);
        memcpy(buf, item, len);
        buf[len] = '\0';
        slash = strrchr(buf, '/');
        if (slash != NULL)
            *slash = '\0';
        if (len > 0 && (slash == NULL || !ip6_mask_ignores_name(slash + 1)) &&
            inet_pton(AF_INET6, buf, &numeric) != 1)
            xtables_error(PARAMETER_PROBLEM, "host/network `%s' is not an IPv6 address "
                          "(vnetd does not resolve host names: write the address)", buf);
        item = end != NULL ? end + 1 : NULL;
    }
    xtables_ip6parse_multiple(spec, addrs, masks, n);
}

/* Protocols that are IPv6 extension headers: never the upper-layer protocol ip6tables matches */
static bool is_exthdr(uint16_t proto)
{
    return proto == IPPROTO_ROUTING || proto == IPPROTO_FRAGMENT || proto == IPPROTO_AH ||
           proto == IPPROTO_DSTOPTS;
}

static void parse_rule(struct vx_rule *r, int argc, char **argv, const char *table,
                       const char *chain)
{
    bool invert = false;

    r->jumpto = "";
    r->argv = argv;
    optind = 0; /* glibc: start afresh, forget the last scan */
    opterr = 0;
    reset_extensions();
    xt_params->opts = xt_params->orig_opts;
    while ((r->c = getopt_long(argc, argv, vx_optstring, xt_params->opts, NULL)) != -1) {
        switch (r->c) {
        case 'p': {
            char *p;
            uint16_t proto;

            set_option(r, VX_OPT_PROTOCOL, 'p', XT_INV_PROTO, invert);
            for (p = argv[optind - 1]; *p; p++)
                *p = tolower((unsigned char)*p);
            r->protocol = argv[optind - 1];
            proto = xtables_parse_protocol(r->protocol);
            if (proto == 0 && (*r->invflags & XT_INV_PROTO))
                xtables_error(PARAMETER_PROBLEM, "rule would never match protocol");
            *r->proto = proto;
            if (r->family == 6) { /* ip6tables' ipv6_proto_parse */
                *r->flags |= IP6T_F_PROTO;
                if (is_exthdr(proto) && !(*r->invflags & XT_INV_PROTO))
                    fprintf(stderr, "Warning: never matched protocol: %s. "
                            "use extension match instead.\n", r->protocol);
            }
            break;
        }
        case 's':
            set_option(r, VX_OPT_SOURCE, 's', IPT_INV_SRCIP, invert);
            r->shost = argv[optind - 1];
            break;
        case 'd':
            set_option(r, VX_OPT_DESTINATION, 'd', IPT_INV_DSTIP, invert);
            r->dhost = argv[optind - 1];
            break;
        case 'i':
            if (*optarg == '\0')
                xtables_error(PARAMETER_PROBLEM, "Empty interface is likely to be undesired");
            set_option(r, VX_OPT_VIANAMEIN, 'i', IPT_INV_VIA_IN, invert);
            xtables_parse_interface(argv[optind - 1], r->iniface, r->iniface_mask);
            break;
        case 'o':
            if (*optarg == '\0')
                xtables_error(PARAMETER_PROBLEM, "Empty interface is likely to be undesired");
            set_option(r, VX_OPT_VIANAMEOUT, 'o', IPT_INV_VIA_OUT, invert);
            xtables_parse_interface(argv[optind - 1], r->outiface, r->outiface_mask);
            break;
        case 'f':
            if (r->family == 6)
                xtables_error(PARAMETER_PROBLEM, "`-f' is not supported in IPv6, use -m frag instead");
            set_option(r, VX_OPT_FRAGMENT, 'f', IPT_INV_FRAG, invert);
            *r->flags |= IPT_F_FRAG;
            break;
        case 'j':
            set_option(r, VX_OPT_JUMP, 'j', 0, invert);
            command_jump(r, argv[optind - 1]);
            break;
        case 'g':
            set_option(r, VX_OPT_JUMP, 'g', 0, invert);
            r->goto_set = true;
            r->jumpto = target_name(optarg);
            if (strcmp(optarg, "ACCEPT") == 0 || strcmp(optarg, "DROP") == 0 ||
                strcmp(optarg, "QUEUE") == 0 || strcmp(optarg, "RETURN") == 0)
                xtables_error(PARAMETER_PROBLEM, "goto '%s' is not a chain", optarg);
            r->jump_is_chain = true;
            break;
        case 'm':
            command_match(r, invert);
            break;
        case 'c':
            set_option(r, VX_OPT_COUNTERS, 'c', 0, invert);
            parse_counters(r, argc, argv);
            break;
        case 1: /* a word that is not an option: only "!" may stand alone */
            if (optarg[0] == '!' && optarg[1] == '\0') {
                if (invert)
                    xtables_error(PARAMETER_PROBLEM, "multiple consecutive ! not allowed");
                invert = true;
                optarg[0] = '\0';
                continue;
            }
            xtables_error(PARAMETER_PROBLEM, "Bad argument `%s'", optarg);
            break;
        /* flags iptables takes with -A that do not change the rule: accepted, as there */
        case 'v':
            if (invert)
                xtables_error(PARAMETER_PROBLEM, "cannot have ! before -v");
            break;
        case '4':
        case '6':
            /* -4 in iptables and -6 in ip6tables say what the command already is */
            if ((r->c == '4') != (r->family == 4))
                xtables_error(PARAMETER_PROBLEM, "command flag %c", r->c);
            break;
        case 'w': {
            int wait;
            const char *arg = optarg;

            if (arg == NULL && optind < argc && argv[optind][0] != '-' && argv[optind][0] != '!')
                arg = argv[optind++];
            if (arg != NULL && sscanf(arg, "%i", &wait) != 1)
                xtables_error(PARAMETER_PROBLEM, "wait seconds not numeric");
            r->wait_set = true;
            break;
        }
        case 'W': {
            unsigned int usec;
            const char *arg = optarg;

            if (arg == NULL && optind < argc && argv[optind][0] != '-' && argv[optind][0] != '!')
                arg = argv[optind++];
            if (arg == NULL)
                xtables_error(PARAMETER_PROBLEM, "wait interval value required");
            if (sscanf(arg, "%u", &usec) != 1)
                xtables_error(PARAMETER_PROBLEM, "wait interval not numeric");
            if (usec > 999999)
                xtables_error(PARAMETER_PROBLEM, "too long usec wait %u > 999999 usec", usec);
            r->wait_interval_set = true;
            break;
        }
        case 'A': case 'C': case 'D': case 'E': case 'F': case 'I': case 'L': case 'M':
        case 'N': case 'P': case 'R': case 'S': case 'V': case 'X': case 'Z':
        case 'h': case 't': case 'n': case 'x': case '0': case 'b':
            /* the Python side words this: "command flag X" is matched there */
            xtables_error(PARAMETER_PROBLEM, "command flag %c", r->c);
            break;
        default:
            if (command_default(r, invert))
                continue;
            break;
        }
        invert = false;
    }

    if (r->wait_interval_set && !r->wait_set)
        xtables_error(PARAMETER_PROBLEM, "--wait-interval only makes sense with --wait");
    if (strcmp(table, "nat") == 0 && strcmp(r->jumpto, "DROP") == 0)
        xtables_error(PARAMETER_PROBLEM, "The \"nat\" table is not intended for filtering, "
                      "the use of DROP is therefore inhibited.");
    {
        struct xtables_rule_match *mp;

        for (mp = r->matches; mp != NULL; mp = mp->next)
            xtables_option_mfcall(mp->match);
    }
    if (r->target != NULL)
        xtables_option_tfcall(r->target);
    if (optind < argc)
        xtables_error(PARAMETER_PROBLEM, "unknown arguments found on commandline");
    if (invert)
        xtables_error(PARAMETER_PROBLEM, "nothing appropriate following !");

    if (r->family == 6) { /* ip6tables' ipv6_post_parse */
        if (r->goto_set)
            *r->flags |= IP6T_F_GOTO;
        parse_addresses6(r->shost != NULL ? r->shost : "::0/0", &r->saddrs6, &r->smasks6, &r->nsaddrs);
        parse_addresses6(r->dhost != NULL ? r->dhost : "::0/0", &r->daddrs6, &r->dmasks6, &r->ndaddrs);
    } else {
        if (r->goto_set)
            *r->flags |= IPT_F_GOTO;
        parse_addresses(r->shost != NULL ? r->shost : "0.0.0.0/0", &r->saddrs, &r->smasks, &r->nsaddrs);
        parse_addresses(r->dhost != NULL ? r->dhost : "0.0.0.0/0", &r->daddrs, &r->dmasks, &r->ndaddrs);
    }
    /* IP6T_INV_SRCIP and IP6T_INV_DSTIP are IPT_INV_SRCIP and IPT_INV_DSTIP */
    if ((r->nsaddrs > 1 || r->ndaddrs > 1) && (*r->invflags & (IPT_INV_SRCIP | IPT_INV_DSTIP)))
        xtables_error(PARAMETER_PROBLEM, "! not allowed with multiple source or destination IP addresses");

    if ((strcmp(chain, "PREROUTING") == 0 || strcmp(chain, "INPUT") == 0) &&
        (r->options & VX_OPT_VIANAMEOUT))
        xtables_error(PARAMETER_PROBLEM, "Can't use -o with %s", chain);
    if ((strcmp(chain, "POSTROUTING") == 0 || strcmp(chain, "OUTPUT") == 0) &&
        (r->options & VX_OPT_VIANAMEIN))
        xtables_error(PARAMETER_PROBLEM, "Can't use -i with %s", chain);

    /* no target, or a chain: the standard target carries the name, libiptc
     * turns it into a verdict or a jump when the table is written */
    if (r->target == NULL) {
        struct xtables_target *std;
        size_t size;

        if (r->jumpto[0] != '\0' && !r->jump_is_chain)
            r->jump_is_chain = true; /* no extension of that name: a chain, or nothing */
        std = xtables_find_target(XT_STANDARD_TARGET, XTF_LOAD_MUST_SUCCEED);
        size = sizeof(struct xt_entry_target) + std->size;
        std->t = xtables_calloc(1, size);
        std->t->u.target_size = size;
        strcpy(std->t->u.user.name, r->jumpto);
        if (!r->jump_is_chain)
            std->t->u.user.revision = std->revision;
        init_target(std);
        r->target = std;
    }
}

/* ------------------------------------------------------------------ entries */

/* The bytes of a match or target that userspace owns (compared; the rest is the
 * kernel's): the extension's userspacesize after the header, or all of it when the
 * extension does not say (0: libxt_helper, libxt_connlabel), as the kernel copies
 * everything back when its own usersize is not set. */
static size_t owned_size(size_t userspacesize, size_t size, size_t header)
{
    return userspacesize ? header + userspacesize : size;
}

/* Copy a match or target into the entry as the kernel returns it: the bytes after
 * its name's NUL and after what userspace owns zeroed (an extension may leave
 * something in its kernel-private part; the kernel never returns it). Compiled
 * entries are therefore clean (xtables.py's clean_entry would change nothing), and
 * are fingerprinted as they are. Returns the owned size. */
static size_t copy_clean(unsigned char *dst, const void *src, size_t size, size_t userspacesize, size_t header)
{
    size_t owned = owned_size(userspacesize, size, header);
    size_t name_len;

    memcpy(dst, src, size);
    name_len = strnlen((const char *)dst + 2, XT_EXTENSION_MAXNAMELEN);
    memset(dst + 2 + name_len, 0, XT_EXTENSION_MAXNAMELEN - name_len);
    if (owned < size)
        memset(dst + owned, 0, size - owned);
    return owned;
}

static PyObject *build_entries(struct vx_rule *r)
{
    struct xtables_rule_match *mp;
    size_t msize = 0, size;
    unsigned char *blob;
    PyObject *entries, *usersizes;
    unsigned int i, j, k = 0;
    /* what iptables / ip6tables allocate for the header (generate_entry) */
    const size_t header = r->family == 6 ? sizeof(struct ip6t_entry) : XT_ALIGN(sizeof(struct ipt_entry));

    if ((size_t)r->nsaddrs * r->ndaddrs > VX_MAX_ENTRIES) {
        PyErr_Format(CompileError, "%u source and %u destination addresses make %zu rules; at most %d",
                     r->nsaddrs, r->ndaddrs, (size_t)r->nsaddrs * r->ndaddrs, VX_MAX_ENTRIES);
        return NULL;
    }
    for (mp = r->matches; mp != NULL; mp = mp->next)
        msize += mp->match->m->u.match_size;
    size = header + msize + r->target->t->u.target_size;
    if (size > 0xffff) {
        PyErr_SetString(CompileError, "rule is too large for one kernel entry");
        return NULL;
    }
    blob = calloc(1, size);
    if (blob == NULL)
        return PyErr_NoMemory();
    if (r->family == 6) {
        memcpy(blob, &r->fw6, sizeof(struct ip6t_entry));
        ((struct ip6t_entry *)blob)->target_offset = header + msize;
        ((struct ip6t_entry *)blob)->next_offset = size;
    } else {
        memcpy(blob, &r->fw, sizeof(struct ipt_entry));
        ((struct ipt_entry *)blob)->target_offset = header + msize;
        ((struct ipt_entry *)blob)->next_offset = size;
    }
    size = header;
    usersizes = PyList_New(0);
    for (mp = r->matches; mp != NULL; mp = mp->next) {
        PyObject *n;

        n = PyLong_FromSize_t(copy_clean(blob + size, mp->match->m, mp->match->m->u.match_size,
                                         mp->match->userspacesize, XT_ALIGN(sizeof(struct xt_entry_match))));
        size += mp->match->m->u.match_size;
        PyList_Append(usersizes, n);
        Py_XDECREF(n);
    }
    {
        PyObject *n = PyLong_FromSize_t(copy_clean(blob + size, r->target->t, r->target->t->u.target_size,
                                                   r->target->userspacesize,
                                                   XT_ALIGN(sizeof(struct xt_entry_target))));
        size += r->target->t->u.target_size;
        PyList_Append(usersizes, n);
        Py_XDECREF(n);
    }

    entries = PyList_New((Py_ssize_t)r->nsaddrs * r->ndaddrs);
    for (i = 0; entries != NULL && i < r->nsaddrs; i++) {
        for (j = 0; j < r->ndaddrs; j++) {
            if (r->family == 6) {
                struct ip6t_entry *e = (struct ip6t_entry *)blob;

                e->ipv6.src = r->saddrs6[i];
                e->ipv6.smsk = r->smasks6[i];
                e->ipv6.dst = r->daddrs6[j];
                e->ipv6.dmsk = r->dmasks6[j];
            } else {
                struct ipt_entry *e = (struct ipt_entry *)blob;

                e->ip.src = r->saddrs[i];
                e->ip.smsk = r->smasks[i];
                e->ip.dst = r->daddrs[j];
                e->ip.dmsk = r->dmasks[j];
            }
            PyList_SET_ITEM(entries, k++, PyBytes_FromStringAndSize((const char *)blob, (Py_ssize_t)size));
        }
    }
    free(blob);
    if (entries == NULL || PyErr_Occurred()) {
        Py_XDECREF(entries);
        Py_DECREF(usersizes);
        return NULL;
    }
    return Py_BuildValue("(NNsNN)", entries, usersizes,
                         r->jump_is_chain ? "chain" : (r->target->t->u.user.name[0] == '\0' ||
                                                       strcmp(r->target->name, "standard") == 0
                                                           ? "standard" : "extension"),
                         PyUnicode_FromString(r->jump_is_chain || strcmp(r->target->name, "standard") == 0
                                                  ? r->jumpto : r->target->t->u.user.name),
                         PyBool_FromLong(r->goto_set));
}

/* libxtables initialised for a family, with the system's extension directory:
 * it comes from the library's build, never from the environment (whoever sets it
 * would choose the code vnetd runs as root). */
static int load_family(int family)
{
    static const char *const env_names[] = {"XTABLES_LIBDIR", "IPTABLES_LIB_DIR", "IP6TABLES_LIB_DIR"};
    char *saved[3] = {NULL, NULL, NULL};
    size_t i;
    const char *v;
    int rc;

    if (getuid() != geteuid())
        return -1; /* xtables_init would _exit(111) in a set-uid process: refuse instead */
    for (i = 0; i < 3; i++) {
        if ((v = getenv(env_names[i])) != NULL)
            saved[i] = strdup(v);
        unsetenv(env_names[i]);
    }
    rc = xtables_init_all(&vx_globals, family == 6 ? NFPROTO_IPV6 : NFPROTO_IPV4);
    for (i = 0; i < 3; i++) {
        if (saved[i] != NULL)
            setenv(env_names[i], saved[i], 1);
        free(saved[i]);
    }
    return rc;
}

static int count_extension_library(struct dl_phdr_info *info, size_t size, void *data)
{
    const char *name = info->dlpi_name;
    size_t len = name != NULL ? strlen(name) : 0;

    (void)size;
    if (len > 3 && strstr(name, "/xtables/lib") != NULL && strcmp(name + len - 3, ".so") == 0)
        ++*(unsigned int *)data;
    return 0;
}

/* Make libxtables serve ``family``. Extensions register, when their library is
 * opened, the target variants of the family loaded at that time only (and the
 * "not a target" cache remembers names of the other family), so a switch unloads
 * every extension library and loads libxtables again for the other family: the
 * extensions' constructors then run again. A library that stays loaded (someone
 * else holds it open) would keep its extensions out of the lists for good: then
 * this module refuses to go on rather than compile rules without them. */
static bool select_family(int family)
{
    if (!vx_ready) {
        PyErr_SetString(PyExc_RuntimeError, vx_family == 0 ? "vnetd.backends._xtables.init() was not called"
                        : "libxtables could not switch family in this process (an extension library "
                          "stayed loaded)");
        return false;
    }
    if (family != 4 && family != 6) {
        PyErr_Format(PyExc_ValueError, "family must be 4 or 6, not %d", family);
        return false;
    }
    if (family != vx_family) {
        unsigned int left = 0;

        xtables_matches = NULL;
        xtables_targets = NULL;
        xtables_pending_matches = NULL;
        xtables_pending_targets = NULL;
        xtables_fini(); /* closes every extension library libxtables opened */
        dl_iterate_phdr(count_extension_library, &left);
        if (left > 0 || load_family(family) < 0) {
            vx_ready = false;
            PyErr_SetString(PyExc_OSError, "libxtables could not switch family in this process (an extension "
                            "library stayed loaded)");
            return false;
        }
        vx_family = family;
    }
    vx_globals.program_name = family == 6 ? "ip6tables" : "iptables";
    xtables_set_params(&vx_globals);
    xtables_set_nfproto(family == 6 ? NFPROTO_IPV6 : NFPROTO_IPV4);
    return true;
}

/* Runs parse_rule with exit_err landing here: 0, or the error status. A function
 * of its own so that no caller's local variable lives across the setjmp. */
static int guarded_parse(struct vx_rule *r, int argc, char **argv, const char *table, const char *chain)
{
    jmp_buf jb;
    int status;

    vx_jump = &jb;
    status = setjmp(jb);
    if (status == 0)
        parse_rule(r, argc, argv, table, chain);
    vx_jump = NULL;
    return status;
}

/* compile(words, table, chain, chains, family=4) -> (entries, usersizes, kind, target, goto, warnings)
 *
 * family: 4 (iptables, ipt_entry) or 6 (ip6tables, ip6t_entry).
 * words: the rule's words as iptables would get them in argv; chains: names that
 * are chains of the table (a jump to one of them is a jump, not an extension).
 * kind: "standard" (ACCEPT... or no target), "chain" (a jump to a chain, or to a
 * name that is no extension: the caller checks it exists), "extension".
 * Raises CompileError with iptables' own message. */
static PyObject *vx_compile(PyObject *self, PyObject *args)
{
    PyObject *words, *chains, *result = NULL, *fast;
    const char *table, *chain;
    Py_ssize_t n, i;
    char **argv;
    struct vx_rule *r;
    struct vx_capture cap;
    int status, family = 4;
    bool captured;

    (void)self;
    if (!PyArg_ParseTuple(args, "OssO|i", &words, &table, &chain, &chains, &family))
        return NULL;
    if (!select_family(family))
        return NULL;
    fast = PySequence_Fast(words, "words must be a sequence of strings");
    if (fast == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(fast);
    if (n > VX_MAX_ARGS) {
        Py_DECREF(fast);
        PyErr_Format(CompileError, "a rule of %zd words is too long (at most %d)", n, VX_MAX_ARGS);
        return NULL;
    }
    argv = calloc((size_t)n + 2, sizeof(char *));
    r = calloc(1, sizeof(*r));
    if (argv == NULL || r == NULL) {
        Py_DECREF(fast);
        free(argv);
        free(r);
        return PyErr_NoMemory();
    }
    argv[0] = strdup(family == 6 ? "ip6tables" : "iptables");
    for (i = 0; i < n; i++) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(fast, i), &len);

        if (s == NULL || (size_t)len != strlen(s)) {
            if (!PyErr_Occurred())
                PyErr_SetString(CompileError, "a word of the rule contains a NUL character");
            goto out;
        }
        argv[i + 1] = strdup(s);
    }
    r->chains = chains;
    rule_init(r, family);

    captured = capture_start(&cap, &stderr);
    status = guarded_parse(r, (int)n + 1, argv, table, chain);
    if (status == 0)
        result = build_entries(r);
    if (captured)
        capture_stop(&cap, &stderr);
    rule_free(r);
    if (status != 0) {
        Py_CLEAR(result);
        PyErr_SetString(CompileError, vx_error);
    } else if (result != NULL) {
        PyObject *warnings = PyUnicode_DecodeUTF8(captured && cap.buf ? cap.buf : "",
                                                  captured && cap.buf ? (Py_ssize_t)cap.len : 0,
                                                  "replace");
        PyObject *full = warnings ? Py_BuildValue("(OOOOON)", PyTuple_GET_ITEM(result, 0),
                                                  PyTuple_GET_ITEM(result, 1), PyTuple_GET_ITEM(result, 2),
                                                  PyTuple_GET_ITEM(result, 3), PyTuple_GET_ITEM(result, 4),
                                                  warnings)
                                  : NULL;
        Py_DECREF(result);
        result = full;
    }
    if (captured)
        free(cap.buf);
out:
    for (i = 0; i < n + 1; i++)
        free(argv[i]);
    free(argv);
    free(r);
    Py_DECREF(fast);
    return result;
}

/* ------------------------------------------------------------------ rendering */

static const char *proto_name(uint16_t proto)
{
    unsigned int i;

    for (i = 0; xtables_chain_protos[i].name != NULL; ++i)
        if (xtables_chain_protos[i].num == proto)
            return xtables_chain_protos[i].name;
    if (proto != 0) {
        struct protoent *pent = getprotobynumber(proto);
        if (pent != NULL)
            return pent->p_name;
    }
    return NULL;
}

static void save_addr(char letter, const struct in_addr *addr, const struct in_addr *mask, int invert)
{
    char buf[INET_ADDRSTRLEN], mbuf[INET_ADDRSTRLEN];
    uint32_t hmask = ntohl(mask->s_addr);
    int bits = -1, i;

    if (!mask->s_addr && !invert && !addr->s_addr)
        return;
    for (i = 0; i <= 32; i++)
        if (hmask == (i == 0 ? 0u : (uint32_t)(0xffffffffu << (32 - i)))) {
            bits = i;
            break;
        }
    if (bits >= 0)
        snprintf(mbuf, sizeof(mbuf), "%d", bits);
    else
        inet_ntop(AF_INET, mask, mbuf, sizeof(mbuf));
    printf("%s -%c %s/%s", invert ? " !" : "", letter, inet_ntop(AF_INET, addr, buf, sizeof(buf)), mbuf);
}

static void save_iface(char letter, const char *iface, const unsigned char *mask, int invert)
{
    unsigned int i;

    if (mask[0] == 0)
        return;
    printf("%s -%c ", invert ? " !" : "", letter);
    for (i = 0; i < IFNAMSIZ; i++) {
        if (mask[i] != 0) {
            if (iface[i] != '\0')
                printf("%c", iface[i]);
        } else {
            if (iface[i - 1] != '\0')
                printf("+");
            break;
        }
    }
}

/* ip6tables' save_ipv6_addr: nothing for ::/0 unless inverted, a prefix length
 * when the mask is one, the mask itself otherwise */
static void save_addr6(char letter, const struct in6_addr *addr, const struct in6_addr *mask, int invert)
{
    char buf[INET6_ADDRSTRLEN];
    int bits = xtables_ip6mask_to_cidr(mask);

    if (!invert && bits == 0)
        return;
    printf("%s -%c %s", invert ? " !" : "", letter, inet_ntop(AF_INET6, addr, buf, sizeof(buf)));
    if (bits == -1)
        printf("/%s", inet_ntop(AF_INET6, mask, buf, sizeof(buf)));
    else
        printf("/%d", bits);
}

static void save_proto(uint16_t proto, uint8_t invflags)
{
    const char *name;

    if (proto == 0)
        return;
    name = proto_name(proto);
    if (invflags & XT_INV_PROTO)
        printf(" !");
    if (name != NULL)
        printf(" -p %s", name);
    else
        printf(" -p %u", proto);
}

/* One entry of either family, as its header says where things are. */
struct vx_entry_view {
    const char *base;         /* the entry */
    unsigned int header;      /* sizeof(struct ipt_entry) or sizeof(struct ip6t_entry) */
    unsigned int target_offset;
    const void *ip;           /* &e->ip or &e->ipv6: what the extensions' save functions read */
    bool go_to;
};

static void save_entry(const void *entry, int family, const char *meaning);

static int guarded_save(const void *entry, int family, const char *meaning)
{
    jmp_buf jb;
    int status;

    vx_jump = &jb;
    status = setjmp(jb);
    if (status == 0)
        save_entry(entry, family, meaning);
    vx_jump = NULL;
    return status;
}

/* The matches and the target, as iptables' and ip6tables' print_match_save and print_rule do. */
static void save_body(const struct vx_entry_view *v, const char *meaning)
{
    const struct xt_entry_target *t;
    unsigned int off;

    for (off = v->header; off < v->target_offset;) {
        const struct xt_entry_match *m = (const void *)(v->base + off);
        struct xtables_match *match, *mt;

        if (m->u.match_size < sizeof(*m) || off + m->u.match_size > v->target_offset)
            xtables_error(OTHER_PROBLEM, "malformed match at offset %u", off);
        match = xtables_find_match(m->u.user.name, XTF_TRY_LOAD, NULL);
        if (match == NULL) {
            printf(" -m %s [no extension]", m->u.user.name);
        } else {
            mt = xtables_find_match_revision(m->u.user.name, XTF_TRY_LOAD, match, m->u.user.revision);
            printf(" -m %s", (mt ? mt : match)->alias ? (mt ? mt : match)->alias(m) : m->u.user.name);
            if (mt != NULL && mt->save != NULL)
                mt->save(v->ip, m);
            else if (match->save != NULL)
                printf(" [unsupported revision]");
        }
        off += m->u.match_size;
    }

    t = (const void *)(v->base + v->target_offset);
    if (t->u.user.name[0] != '\0') {
        struct xtables_target *target, *tg;

        target = xtables_find_target(t->u.user.name, XTF_TRY_LOAD);
        if (target == NULL) {
            printf(" -j %s [no extension]", t->u.user.name);
            return;
        }
        tg = xtables_find_target_revision(t->u.user.name, XTF_TRY_LOAD, target, t->u.user.revision);
        printf(" -j %s", (tg ? tg : target)->alias ? (tg ? tg : target)->alias(t) : t->u.user.name);
        if (tg != NULL && tg->save != NULL)
            tg->save(v->ip, t);
        else if (target->save != NULL)
            printf(" [unsupported revision]");
    } else if (meaning != NULL && meaning[0] != '\0') {
        printf(" -%c %s", v->go_to ? 'g' : 'j', meaning);
    }
}

static void save_entry(const void *entry, int family, const char *meaning)
{
    struct vx_entry_view v;

    v.base = entry;
    if (family == 6) { /* ip6tables' print_rule6 */
        const struct ip6t_entry *e = entry;

        save_addr6('s', &e->ipv6.src, &e->ipv6.smsk, e->ipv6.invflags & IP6T_INV_SRCIP);
        save_addr6('d', &e->ipv6.dst, &e->ipv6.dmsk, e->ipv6.invflags & IP6T_INV_DSTIP);
        save_iface('i', e->ipv6.iniface, e->ipv6.iniface_mask, e->ipv6.invflags & IP6T_INV_VIA_IN);
        save_iface('o', e->ipv6.outiface, e->ipv6.outiface_mask, e->ipv6.invflags & IP6T_INV_VIA_OUT);
        save_proto(e->ipv6.proto, e->ipv6.invflags);
        if (e->ipv6.flags & IP6T_F_TOS)
            printf("%s -? %d", e->ipv6.invflags & IP6T_INV_TOS ? " !" : "", e->ipv6.tos);
        v.header = sizeof(struct ip6t_entry);
        v.target_offset = e->target_offset;
        v.ip = &e->ipv6;
        v.go_to = e->ipv6.flags & IP6T_F_GOTO;
    } else {
        const struct ipt_entry *e = entry;

        save_addr('s', &e->ip.src, &e->ip.smsk, e->ip.invflags & IPT_INV_SRCIP);
        save_addr('d', &e->ip.dst, &e->ip.dmsk, e->ip.invflags & IPT_INV_DSTIP);
        save_iface('i', e->ip.iniface, e->ip.iniface_mask, e->ip.invflags & IPT_INV_VIA_IN);
        save_iface('o', e->ip.outiface, e->ip.outiface_mask, e->ip.invflags & IPT_INV_VIA_OUT);
        save_proto(e->ip.proto, e->ip.invflags);
        if (e->ip.flags & IPT_F_FRAG)
            printf("%s -f", e->ip.invflags & IPT_INV_FRAG ? " !" : "");
        v.header = sizeof(struct ipt_entry);
        v.target_offset = e->target_offset;
        v.ip = &e->ip;
        v.go_to = e->ip.flags & IPT_F_GOTO;
    }
    save_body(&v, meaning);
}

/* render(entry, meaning, family=4) -> the rule as iptables-save (ip6tables-save for
 * family 6) prints it, without "-A CHAIN".
 * meaning: what a standard target means (ACCEPT, a chain name, "" for none). */
static PyObject *vx_render(PyObject *self, PyObject *args)
{
    const char *data, *meaning = NULL;
    Py_ssize_t len;
    struct vx_capture out, err;
    int status, family = 4;
    PyObject *result;
    void *copy;
    size_t header;
    uint16_t target_offset, next_offset;

    (void)self;
    if (!PyArg_ParseTuple(args, "y#z|i", &data, &len, &meaning, &family))
        return NULL;
    if (!select_family(family))
        return NULL;
    header = family == 6 ? sizeof(struct ip6t_entry) : sizeof(struct ipt_entry);
    if ((size_t)len < header + sizeof(struct xt_entry_target)) {
        PyErr_SetString(CompileError, family == 6 ? "not an ip6t_entry" : "not an ipt_entry");
        return NULL;
    }
    if (family == 6) {
        const struct ip6t_entry *e = (const void *)data;

        target_offset = e->target_offset;
        next_offset = e->next_offset;
    } else {
        const struct ipt_entry *e = (const void *)data;

        target_offset = e->target_offset;
        next_offset = e->next_offset;
    }
    if (target_offset < header || next_offset > len ||
        target_offset + sizeof(struct xt_entry_target) > next_offset) {
        PyErr_SetString(CompileError, family == 6 ? "malformed ip6t_entry" : "malformed ipt_entry");
        return NULL;
    }
    copy = malloc((size_t)len); /* aligned for the extensions' struct reads */
    if (copy == NULL)
        return PyErr_NoMemory();
    memcpy(copy, data, (size_t)len);
    if (!capture_start(&out, &stdout)) {
        free(copy);
        return PyErr_NoMemory();
    }
    if (!capture_start(&err, &stderr)) {
        capture_stop(&out, &stdout);
        free(out.buf);
        free(copy);
        return PyErr_NoMemory();
    }
    status = guarded_save(copy, family, meaning);
    capture_stop(&err, &stderr);
    capture_stop(&out, &stdout);
    free(err.buf);
    free(copy);
    xtables_free_opts(1);
    if (status != 0) {
        free(out.buf);
        PyErr_SetString(CompileError, vx_error);
        return NULL;
    }
    result = PyUnicode_DecodeUTF8(out.buf ? out.buf : "", out.buf ? (Py_ssize_t)out.len : 0, "replace");
    free(out.buf);
    return result;
}

/* ------------------------------------------------------------------ extensions */

#define VX_MAX_OPTIONS 256

/* What one extension offers, for "did you mean" (vnetd/backends/rulehints.py): the
 * long options it accepts, or its help text as `iptables -m NAME --help` prints it. */
struct vx_query {
    bool target;   /* a target extension (else a match) */
    const char *name;
    bool help;     /* print the help (captured), else collect the option names */
    bool found;
    const char *options[VX_MAX_OPTIONS];
    unsigned int n;
};

static void add_option_name(struct vx_query *q, const char *name)
{
    if (name != NULL && q->n < VX_MAX_OPTIONS)
        q->options[q->n++] = name;
}

static void collect_options(struct vx_query *q, const struct xt_option_entry *x6, const struct option *extra)
{
    if (x6 != NULL)
        for (; x6->name != NULL; x6++)
            add_option_name(q, x6->name);
    else if (extra != NULL)
        for (; extra->name != NULL; extra++)
            add_option_name(q, extra->name);
}

static void query_extension(struct vx_query *q)
{
    check_extension_name(q->target ? "target" : "match", q->name);
    if (q->target) {
        struct xtables_target *t = xtables_find_target(q->name, XTF_TRY_LOAD);

        if (t == NULL)
            return;
        q->found = true;
        if (q->help) {
            if (t->help != NULL)
                t->help();
        } else {
            collect_options(q, t->x6_options, t->extra_opts);
        }
        if (t == t->next) /* a clone libxtables made for a second use: ours to free */
            free(t);
    } else {
        struct xtables_match *m = xtables_find_match(q->name, XTF_TRY_LOAD, NULL);

        if (m == NULL)
            return;
        q->found = true;
        if (q->help) {
            if (m->help != NULL)
                m->help();
        } else {
            collect_options(q, m->x6_options, m->extra_opts);
        }
        if (m == m->next)
            free(m);
    }
}

static int guarded_query(struct vx_query *q)
{
    jmp_buf jb;
    int status;

    vx_jump = &jb;
    status = setjmp(jb);
    if (status == 0)
        query_extension(q);
    vx_jump = NULL;
    return status;
}

/* extension(kind, name, help, family=4) -> list of long option names ("--dport"), or
 * the help text (help true); None when no such extension is installed. kind: "match"
 * or "target". Loads the extension as -m/-j would (the kernel's revision); changes no
 * rule and leaves libxtables' per-rule state reset. family: 4 (iptables' extensions)
 * or 6 (ip6tables': libip6t_* and the IPv6 variants of libxt_*). */
static PyObject *vx_extension(PyObject *self, PyObject *args)
{
    const char *kind, *name;
    int help, family = 4;
    struct vx_query q;
    struct vx_capture out, err;
    bool out_ok, err_ok;
    int status;
    PyObject *result = NULL;
    unsigned int i;

    (void)self;
    if (!PyArg_ParseTuple(args, "ssp|i", &kind, &name, &help, &family))
        return NULL;
    if (strcmp(kind, "match") != 0 && strcmp(kind, "target") != 0) {
        PyErr_Format(PyExc_ValueError, "kind must be 'match' or 'target', not '%s'", kind);
        return NULL;
    }
    if (!select_family(family))
        return NULL;
    memset(&q, 0, sizeof(q));
    q.target = kind[0] == 't';
    q.name = name;
    q.help = help != 0;
    reset_extensions();
    out_ok = capture_start(&out, &stdout);
    err_ok = capture_start(&err, &stderr);
    status = guarded_query(&q);
    if (err_ok)
        capture_stop(&err, &stderr);
    if (out_ok)
        capture_stop(&out, &stdout);
    reset_extensions();
    if (err_ok)
        free(err.buf);
    if (status != 0) {
        PyErr_SetString(CompileError, vx_error);
    } else if (!q.found) {
        result = Py_NewRef(Py_None);
    } else if (q.help) {
        result = PyUnicode_DecodeUTF8(out_ok && out.buf ? out.buf : "", out_ok && out.buf ? (Py_ssize_t)out.len : 0,
                                      "replace");
    } else {
        result = PyList_New(0);
        for (i = 0; result != NULL && i < q.n; i++) {
            PyObject *option = PyUnicode_FromFormat("--%s", q.options[i]);

            if (option == NULL || PyList_Append(result, option) < 0)
                Py_CLEAR(result);
            Py_XDECREF(option);
        }
    }
    if (out_ok)
        free(out.buf);
    return result;
}

/* init() -> None: libxtables for IPv4, with the system's extension directory
 * (compile and render switch family as they are asked to). */
static PyObject *vx_init(PyObject *self, PyObject *args)
{
    (void)self;
    (void)args;
    if (vx_ready || vx_family != 0)
        Py_RETURN_NONE; /* a module that could not switch family stays unusable (select_family) */
    if (load_family(4) < 0) {
        PyErr_SetString(PyExc_OSError, "libxtables could not be initialised");
        return NULL;
    }
    vx_family = 4;
    vx_ready = true;
    Py_RETURN_NONE;
}

static PyMethodDef vx_methods[] = {
    {"init", vx_init, METH_NOARGS, "Initialise libxtables (for IPv4 first; idempotent)."},
    {"compile", vx_compile, METH_VARARGS,
     "compile(words, table, chain, chains, family=4) -> (entries, usersizes, kind, target, goto, warnings)"},
    {"render", vx_render, METH_VARARGS,
     "render(entry, meaning, family=4) -> the rule as iptables-save / ip6tables-save prints it, "
     "without '-A CHAIN'"},
    {"extension", vx_extension, METH_VARARGS,
     "extension(kind, name, help, family=4) -> an extension's long options (or help text); None if not installed"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef vx_module = {
    PyModuleDef_HEAD_INIT, "vnetd.backends._xtables",
    "iptables' and ip6tables' rule language compiled and printed by libxtables, as the commands do.",
    -1, vx_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__xtables(void)
{
    PyObject *m = PyModule_Create(&vx_module);

    if (m == NULL)
        return NULL;
    CompileError = PyErr_NewException("vnetd.backends._xtables.CompileError", PyExc_ValueError, NULL);
    if (CompileError == NULL || PyModule_AddObject(m, "CompileError", CompileError) < 0) {
        Py_XDECREF(CompileError);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(CompileError);
    PyModule_AddIntConstant(m, "ENTRY_SIZE", (long)XT_ALIGN(sizeof(struct ipt_entry)));
    PyModule_AddIntConstant(m, "ENTRY6_SIZE", (long)XT_ALIGN(sizeof(struct ip6t_entry)));
    PyModule_AddStringConstant(m, "XTABLES_VERSION", XTABLES_VERSION);
    return m;
}
