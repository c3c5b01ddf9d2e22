/* Shared definitions of the pybpf corpus (tests/corpus: programs in the style of real
 * networking code, run in pybpf's two engines and in the kernel (tests/test_corpus.py).
 * Self-contained (no kernel headers, no libbpf): samples/c/bpf_helpers.h (types, helpers by id,
 * contexts) plus the protocol headers below.
 */
#ifndef PYBPF_CORPUS_H
#define PYBPF_CORPUS_H

/* types, map-definition macros, helpers by id, contexts: the one header of pybpf's C programs */
#include "../../samples/c/bpf_helpers.h"

/* ---- protocol headers ---------------------------------------------------------------------- */
#define ETH_HLEN 14
#define ETH_ALEN 6
#define ETH_P_IP 0x0800
#define ETH_P_ARP 0x0806
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define ETH_P_IPV6 0x86DD
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ICMPV6 58
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

struct ethhdr { __u8 h_dest[ETH_ALEN]; __u8 h_source[ETH_ALEN]; __be16 h_proto; };
struct vlan_hdr { __be16 h_vlan_TCI; __be16 h_vlan_encapsulated_proto; };
struct iphdr {
	__u8 ihl:4, version:4;
	__u8 tos;
	__be16 tot_len, id, frag_off;
	__u8 ttl, protocol;
	__sum16 check;
	__be32 saddr, daddr;
};
struct ipv6hdr {
	__u8 priority:4, version:4;
	__u8 flow_lbl[3];
	__be16 payload_len;
	__u8 nexthdr, hop_limit;
	__u8 saddr[16], daddr[16];
};
struct tcphdr {
	__be16 source, dest;
	__be32 seq, ack_seq;
	__u16 res1:4, doff:4, fin:1, syn:1, rst:1, psh:1, ack:1, urg:1, ece:1, cwr:1;
	__be16 window;
	__sum16 check;
	__be16 urg_ptr;
};
struct udphdr { __be16 source, dest, len; __sum16 check; };
struct icmphdr { __u8 type, code; __sum16 checksum; __be16 id, sequence; };

/* RFC 1624 incremental checksum update of a 16-bit field */
static __always_inline __u16 csum_replace2(__u16 check, __u16 old, __u16 new)
{
	__u32 sum = (__u16)~check + (__u16)~old + new;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum;
}

#endif
