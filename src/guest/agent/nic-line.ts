import type { NicConfig } from '../../protocol/agent/messages.js';

/**
 * The argument of the helper's `net` command (vmc-helper.c) that gives NIC `name` its MTU (and, with
 * `setMac`, the MAC of `nic`) and sets its link up, then adds its addresses and routes:
 * `NAME MTU [m=MAC] a=CIDR... r=DEST[,VIA]...`, one line in serve mode. The
 * helper speaks rtnetlink itself, so the whole set-up is one pipe round trip; `busybox sh` running one `ip`
 * per step cost ~500 ms under TCG (a fork of the guest's Node, then one fork per command; bench run of
 * 2026-12-03 07:20 UTC). The frame validation (messages.ts) admits only hex digits, dots, colons and slashes in
 * the values, so none can hold the line's separators; a name with a blank (the kernel refuses them) is refused
 * here. Pure.
 */
export function nicHelperArg(name: string, nic: NicConfig, setMac = false): string {
  const values = [name, ...nic.addresses, ...nic.routes.flatMap((r) => (r.via ? [r.dest, r.via] : [r.dest]))];
  const bad = values.find((v) => !/^[^\s,]+$/.test(v));
  if (bad !== undefined)
    throw new Error(`net: value ${JSON.stringify(bad)} is empty or holds a blank or a comma`);
  const words = [
    name,
    String(nic.mtu),
    ...(setMac ? [`m=${nic.mac}`] : []),
    ...nic.addresses.map((a) => `a=${a}`),
  ];
  for (const r of nic.routes) words.push(`r=${r.dest}${r.via ? `,${r.via}` : ''}`);
  return words.join(' ');
}
