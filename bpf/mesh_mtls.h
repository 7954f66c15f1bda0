/* The datapath's share of the mTLS proxy (DESIGN.md flow 2), included by mesh.bpf.c after its
 * maps and helpers: the caller's identity from its cgroup (the outermost configured ancestor, so
 * a delegated subtree cannot pick another), the diversion of an mTLS service's connect to
 * meshd's outbound listener after the backend was chosen as for any connect, the record of that
 * choice keyed by the connection's 4-tuple (written at ACTIVE_ESTABLISHED, before meshd's accept
 * returns: the Merbridge way), the program meshd runs to feed a connect outcome to a backend's
 * breaker (BPF_PROG_TEST_RUN: the breaker's lock is only taken in BPF), and the sk_lookup
 * program that refuses plaintext connections from other hosts to strict ports. */
#ifndef MESH_BPF_MTLS_H
#define MESH_BPF_MTLS_H

#define AF_INET6 10
#define SK_DROP_ 0
#define SK_PASS_ 1

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mesh_mtls_cfg);
} mesh_mtls_cfg SEC(".maps");

/* cgroup id -> identity (a hash of the service name, never 0). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESH_MAX_IDENTITY_CGROUPS);
	__type(key, __u64);
	__type(value, __u32);
} mesh_idents SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MESH_MTLS_ORIG_ENTRIES);
	__type(key, struct mesh_mtls_key);
	__type(value, struct mesh_mtls_orig);
} mesh_mtls_orig SEC(".maps");

/* Local ports (host byte order) whose plaintext connections from other hosts are refused. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MESH_MAX_STRICT_PORTS);
	__type(key, __u16);
	__type(value, __u8);
} mesh_strict SEC(".maps");

enum mtls_verdict {
	MTLS_OFF = 0,	 /* not an mTLS connect: as any service */
	MTLS_DIVERT = 1, /* to meshd, with *identity */
	MTLS_REFUSE = 2, /* no identity, policy refuse */
};

static __always_inline const struct mesh_mtls_cfg *mtls_cfg(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&mesh_mtls_cfg, &zero);
}

/* The caller's identity: the outermost ancestor cgroup (root first) with one, 0 when none. */
static __always_inline __u32 mtls_caller_identity(void)
{
	for (int level = 0; level < MESH_CGROUP_DEPTH_MAX; level++) {
		__u64 id = bpf_get_current_ancestor_cgroup_id(level);
		__u32 *v;

		if (!id)
			break;
		v = bpf_map_lookup_elem(&mesh_idents, &id);
		if (v)
			return *v;
	}
	return 0;
}

/* What a connect to a service with `svc_flags` does about mTLS: MTLS_OFF, MTLS_REFUSE, or
 * MTLS_DIVERT | identity << 8. A global function: the verifier checks it once, not once per
 * path of the connect program (inlined, the ancestor loop made the program too big to load).
 * Looked at before the backend is chosen, so a refused connect takes no probe token. */
__noinline int mtls_verdict_of(struct bpf_sock_addr *ctx, __u32 svc_flags)
{
	const struct mesh_mtls_cfg *cfg;
	struct bpf_sock *sk;
	__u32 identity;

	if (!ctx || !(svc_flags & MESH_SVC_F_MTLS))
		return MTLS_OFF;
	cfg = mtls_cfg();
	if (!cfg || !cfg->enabled)
		return MTLS_OFF;
	sk = ctx->sk;
	if (sk && sk->mark == MESH_SOCKET_MARK) {
		count(MESH_CNT_MTLS_MESHD);
		return MTLS_OFF;
	}
	identity = mtls_caller_identity();
	if (identity)
		return (int)(MTLS_DIVERT | (identity & 0xffffff) << 8);
	if (cfg->no_identity == 0)
		return MTLS_REFUSE;
	count(MESH_CNT_MTLS_PLAIN);
	return MTLS_OFF;
}

static __always_inline int mtls_verdict(struct bpf_sock_addr *ctx, const struct mesh_svc *svc,
					__u32 *identity)
{
	int v;

	if (!(svc->flags & MESH_SVC_F_MTLS)) /* the common case: no call at all */
		return MTLS_OFF;
	v = mtls_verdict_of(ctx, svc->flags);
	*identity = (__u32)v >> 8;
	return v & 0xff;
}

/* After redirect() wrote the chosen backend: send the connect to meshd's outbound listener. */
static __always_inline void mtls_divert(struct bpf_sock_addr *ctx, struct mesh_sock *ms, int v4,
					__u32 identity)
{
	const struct mesh_mtls_cfg *cfg = mtls_cfg();

	if (!cfg)
		return;
	if (v4) {
		ctx->user_ip4 = cfg->outbound_ip4;
	} else {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = cfg->outbound_ip4;
	}
	ctx->user_port = cfg->outbound_port;
	ms->flags |= MESH_SK_F_MTLS | (identity << MESH_SK_IDENTITY_SHIFT);
	count(MESH_CNT_MTLS);
}

/* mtls.no_identity refuse: connect() fails with EACCES (EPERM without bpf_set_retval). */
static __always_inline int mtls_refuse(struct bpf_sock_addr *ctx)
{
	count(MESH_CNT_MTLS_REFUSED);
	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_set_retval))
		bpf_set_retval(-MESH_ERRNO_NO_IDENTITY);
	return VERDICT_REJECT;
}

/* Whether a socket connects to the outbound listener (take_decision's check for mTLS). */
static __always_inline int mtls_connecting(__u32 family, __u32 v4, __u32 w0, __u32 w1, __u32 w2,
					   __u32 w3, __u16 port)
{
	const struct mesh_mtls_cfg *cfg = mtls_cfg();

	if (!cfg || port != cfg->outbound_port)
		return 0;
	if (family == AF_INET)
		return v4 == cfg->outbound_ip4;
	return w0 == 0 && w1 == 0 && w2 == bpf_htonl(0xffff) && w3 == cfg->outbound_ip4;
}

static __always_inline void mapped4(__u8 *dst, __u32 ip4)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	*(__u32 *)&dst[12] = ip4;
}

/* ACTIVE_ESTABLISHED of a diverted socket: record the decision for meshd's accept(). */
static __always_inline void mtls_record(struct bpf_sock_ops *skops, const struct mesh_sock *ms)
{
	struct mesh_mtls_key k = {};
	struct mesh_mtls_orig o = {};
	__u32 id = ms->backend_id;
	struct mesh_backend *be = bpf_map_lookup_elem(&mesh_backends, &id);

	if (!be) {
		count(MESH_CNT_MTLS_ORIG_ERR);
		return;
	}
	if (skops->family == AF_INET) {
		mapped4(k.client, skops->local_ip4);
		mapped4(k.local, skops->remote_ip4);
	} else {
		__u32 *c = (__u32 *)k.client, *l = (__u32 *)k.local;

		c[0] = skops->local_ip6[0];
		c[1] = skops->local_ip6[1];
		c[2] = skops->local_ip6[2];
		c[3] = skops->local_ip6[3];
		l[0] = skops->remote_ip6[0];
		l[1] = skops->remote_ip6[1];
		l[2] = skops->remote_ip6[2];
		l[3] = skops->remote_ip6[3];
	}
	/* local_port is in host order; remote_port in network order in the upper half. */
	k.client_port = bpf_htons((__u16)skops->local_port);
	k.local_port = bpf_htons((__u16)bpf_ntohl(skops->remote_port));
	o.vip = ms->vip;
	__builtin_memcpy(o.backend, be->addr, 16);
	o.backend_port = be->port;
	o.flags = ms->flags & MESH_SK_F_PROBE ? MESH_ORIG_F_PROBE : 0;
	o.backend_id = id;
	o.be_epoch = ms->be_epoch;
	o.identity = ms->flags >> MESH_SK_IDENTITY_SHIFT;
	if (bpf_map_update_elem(&mesh_mtls_orig, &k, &o, BPF_ANY))
		count(MESH_CNT_MTLS_ORIG_ERR);
	else
		count(MESH_CNT_MTLS_ORIG);
}

/* One outcome of a connect meshd made for a diverted connection (tunnel, handshake, remote
 * backend connect), fed to the backend's breaker as sockops feeds plain connects. Run by meshd
 * with BPF_PROG_TEST_RUN, the struct mesh_outcome as packet data. Returns 0, or 1 when the
 * service or backend is gone. */
SEC("tc")
int mesh_outcome(struct __sk_buff *skb)
{
	struct mesh_outcome o;
	struct mesh_sock ms = {};
	struct mesh_be_state *bs;
	struct mesh_svc *svc;

	if (bpf_skb_load_bytes(skb, 0, &o, sizeof(o)))
		return 1;
	svc = bpf_map_lookup_elem(&mesh_services, &o.vip);
	if (!svc)
		return 1;
	ms.vip = o.vip;
	ms.service_id = svc->service_id;
	ms.backend_id = o.backend_id;
	ms.be_epoch = o.be_epoch;
	ms.flags = MESH_SK_F_SERVICE | (o.probe ? MESH_SK_F_PROBE : 0);
	count(MESH_CNT_OUTCOME);
	bs = sock_backend(&ms);
	if (!bs)
		return 1;
	if (o.ok)
		ADD(bs->ok, 1);
	else
		ADD(bs->failed, 1);
	outcome(&ms, bs, o.ok, o.rtt_ns);
	return 0;
}

static __always_inline int loopback6(const __u32 *a)
{
	return (a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1)) ||
	       (a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0xffff) &&
		(bpf_ntohl(a[3]) >> 24) == 127);
}

/* mtls.strict_inbound: a SYN to a strict port from another host finds no socket (so the kernel
 * answers with a reset: connection refused). Loopback (meshd's inbound side connects to a local
 * backend from the loopback address) and this host's own address pass. */
SEC("sk_lookup")
int mesh_strict_inbound(struct bpf_sk_lookup *ctx)
{
	__u16 port = (__u16)ctx->local_port;
	__u32 r[4], l[4];

	if (ctx->protocol != IPPROTO_TCP || !bpf_map_lookup_elem(&mesh_strict, &port))
		return SK_PASS_;
	if (ctx->family == AF_INET) {
		if ((bpf_ntohl(ctx->remote_ip4) >> 24) == 127 || ctx->remote_ip4 == ctx->local_ip4)
			return SK_PASS_;
	} else {
		r[0] = ctx->remote_ip6[0];
		r[1] = ctx->remote_ip6[1];
		r[2] = ctx->remote_ip6[2];
		r[3] = ctx->remote_ip6[3];
		l[0] = ctx->local_ip6[0];
		l[1] = ctx->local_ip6[1];
		l[2] = ctx->local_ip6[2];
		l[3] = ctx->local_ip6[3];
		if (loopback6(r) || (r[0] == l[0] && r[1] == l[1] && r[2] == l[2] && r[3] == l[3]))
			return SK_PASS_;
	}
	count(MESH_CNT_STRICT_DROP);
	return SK_DROP_;
}

#endif
