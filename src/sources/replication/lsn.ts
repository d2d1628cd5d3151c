/**
 * Log sequence numbers: "X/Y" as PostgreSQL prints them (two hex halves of a
 * 64-bit position), as bigints for comparison. Every LSN this module returns
 * is in PostgreSQL's own spelling, so it compares equal to pg_lsn text.
 */
const LSN = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/;

export function parseLsn(text: string): bigint {
  const m = LSN.exec(text);
  if (!m) throw new Error(`not an LSN: ${JSON.stringify(text)}`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** 16 hex digits, sortable as text: the commit position in bus message ids. */
export function lsnKey(lsn: bigint): string {
  return lsn.toString(16).toUpperCase().padStart(16, '0');
}
