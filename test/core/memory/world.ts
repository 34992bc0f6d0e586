// The memory-core differential harness shared by the property test and the fuzz target:
// random region trees (as op tuples) built on an engine, random access streams run through it,
// and a brute-force resolver written from the memory.rst rules (highest priority first,
// newest first among equals, containers transparent, aliases windowed, readonly inherited),
// independent of both engines.
import { MemoryCore, type AddressSpace, type IoOps, type MemoryRegion } from "../../../src/core/memory/index.js";

export const U64 = 1n << 64n;
const HIGH = 0xffffffffffff0000n; // a window at the top of the 64-bit space
const MID = 0xfffff000n; // straddles 4 GiB

export type Desc = {
  name: string;
  kind: "container" | "ram" | "rom" | "io" | "alias" | "rom-device";
  size: bigint;
  enabled: boolean;
  readonly: boolean;
  addr: bigint;
  priority: number;
  seq: number; // insertion order into the container (newest wins among equal priorities)
  parent: Desc | null;
  children: Desc[];
  target?: Desc;
  aliasOffset: bigint;
};

/** Brute-force: which region and offset show at `off` of `d`? */
export function resolve(d: Desc, off: bigint, ro: boolean): { name: string; offset: bigint; readonly: boolean } | null {
  if (!d.enabled) return null;
  const r = ro || d.readonly;
  if (d.kind === "alias") {
    const t = off + d.aliasOffset;
    if (!d.target || t >= d.target.size) return null;
    return resolve(d.target, t, r);
  }
  const kids = [...d.children].sort((a, b) => b.priority - a.priority || b.seq - a.seq);
  for (const c of kids) {
    if (off >= c.addr && off < c.addr + c.size) {
      const hit = resolve(c, off - c.addr, r);
      if (hit) return hit;
    }
  }
  if (d.kind === "container") return null;
  return { name: d.name, offset: off, readonly: r };
}

/** One device per engine with a byte register file, so every split sees consistent bytes. */
function device(log: string[], name: string, variant: number): IoOps {
  const regs = new Map<number, number>();
  const byteAt = (o: number) => regs.get(o) ?? ((o * 31 + variant) & 0xff);
  const sizes = [undefined, 1, 2, 4, 8] as const;
  const impl = variant % 5;
  const valid = (variant >> 3) % 5;
  return {
    read(offset, size) {
      log.push(`${name} r ${offset}/${size}`);
      let v = 0n;
      for (let k = size - 1; k >= 0; k--) v = (v << 8n) | BigInt(byteAt(offset + k));
      return size === 8 ? v : Number(v);
    },
    write(offset, size, value) {
      log.push(`${name} w ${offset}/${size}=${value}`);
      let v = BigInt(value);
      for (let k = 0; k < size; k++, v >>= 8n) regs.set(offset + k, Number(v & 0xffn));
    },
    accepts: variant % 7 === 3 ? (offset, size) => (offset & 0x30) !== 0x30 || size === 1 : undefined,
    endianness: variant % 3 === 1 ? "big" : "little",
    impl: { min: variant % 11 === 2 ? 2 : undefined, max: sizes[impl] === undefined ? undefined : Math.max(sizes[impl]!, variant % 11 === 2 ? 2 : 1) as 1 | 2 | 4 | 8, unaligned: variant % 13 === 5 },
    valid: { max: sizes[valid], unaligned: variant % 13 === 5 || variant % 4 === 1 },
  };
}

export type TopoOp = [number, number, number, number, number];
export type AccessOp = [number, number, number, number];

export interface World {
  mem: MemoryCore;
  regions: MemoryRegion[];
  as: AddressSpace;
  log: string[];
  /** Address spaces rooted at some of the regions (region.view()), with their regions' index. */
  views: { as: AddressSpace; index: number }[];
  /** The flat view of every view at every commit, in order. */
  snapshots: string[];
  /** Reads through the still-current flat view right after a destroy inside the transaction. */
  probes: string[];
  /** Indices of destroyed regions. */
  destroyed: Set<number>;
}

/** Where `d` sits in the root's address space, or null while it is not mapped under the root. */
function absoluteAddr(d: Desc): bigint | null {
  let addr = 0n;
  let x: Desc = d;
  while (x.parent) {
    addr += x.addr;
    x = x.parent;
  }
  return x.name === "root" ? addr : null;
}

function pickAddr(sel: number, descs: Desc[]): bigint {
  const bases = [0n, 0x1000n, 0x2000n, 0x3ff0n, MID, HIGH, U64 - 0x10n];
  // Three quarters of the addresses are aimed at a generated region (by its absolute
  // address, parents included): a third of those near one of its edges, the rest inside
  // it, so accesses reach devices, RAM and priority/overlap boundaries rather than holes.
  const aim = sel & 3;
  if (aim !== 0 && descs.length) {
    const d = descs[(sel >>> 2) % descs.length];
    const at = absoluteAddr(d) ?? d.addr;
    if (aim === 1) {
      const edge = (sel >>> 8) % 2 ? at : at + d.size;
      return BigInt.asUintN(64, edge + BigInt(((sel >>> 10) % 17) - 8));
    }
    return BigInt.asUintN(64, at + (BigInt(sel >>> 8) % d.size));
  }
  return BigInt.asUintN(64, bases[(sel >>> 2) % bases.length] + BigInt((sel >>> 5) % 0x2100));
}

export function build(engine: "wasm" | "reference", ops: TopoOp[]): { w: World; descs: Desc[]; errors: string[]; root: Desc } {
  const mem = MemoryCore.create({ engine });
  const log: string[] = [];
  const errors: string[] = [];
  const rootDesc: Desc = { name: "root", kind: "container", size: U64, enabled: true, readonly: false, addr: 0n, priority: 0, seq: 0, parent: null, children: [], aliasOffset: 0n };
  const root = mem.container("root", U64);
  const regions: MemoryRegion[] = [root];
  const descs: Desc[] = [rootDesc];
  let seq = 1;
  const as = mem.addressSpace("as", root);
  // Extra address spaces over subtrees: the wasm core re-renders only the spaces whose tree
  // changed at a commit, the model all of them, so every view is compared at every commit.
  const views: World["views"] = [];
  const snapshots: string[] = [];
  const snapshot = () => {
    for (const v of views) {
      let names: string;
      try {
        names = flatNames(v.as).join(", ");
      } catch (e) {
        names = (e as { code?: string }).code ?? String(e); // its region was destroyed
      }
      snapshots.push(`${v.index}: ${names}`);
    }
  };
  const probes: string[] = [];
  const destroyed = new Set<number>();
  const tryOp = (fn: () => void) => {
    try {
      fn();
      errors.push("ok");
    } catch (e) {
      errors.push((e as { code?: string }).code ?? String(e));
    }
  };
  const sizes = [0x10n, 0x40n, 0x100n, 0x1000n, 0x2000n, 0x3n, 0x801n, 0x10000n];
  mem.begin();
  for (const [op, a, b, c, prio] of ops) {
    // Codes 11 and 12 also create I/O regions, so the access splitting and device-callback
    // paths get a real share of the traffic.
    const kind = op >= 11 ? 2 : op;
    const name = `r${regions.length}`;
    const size = sizes[a % sizes.length];
    const pick = (n: number) => (regions.length ? n % regions.length : 0);
    switch (kind) {
      case 0:
      case 1:
      case 2:
      case 3:
      case 4:
      case 8: {
        // create a region and map it into some container
        const k = kind === 8 ? "rom-device" : (["ram", "rom", "io", "container", "alias"] as const)[kind];
        let r: MemoryRegion;
        const d: Desc = { name, kind: k, size, enabled: true, readonly: false, addr: 0n, priority: prio, seq: 0, parent: null, children: [], aliasOffset: 0n };
        if (k === "ram") r = mem.ram(name, size, new Uint8Array(Number(size)).map((_, i) => (i * 7 + a) & 0xff));
        else if (k === "rom") r = mem.rom(name, size, new Uint8Array(Number(size)).map((_, i) => (i * 5 + b) & 0xff));
        else if (k === "io") r = mem.io(name, size, device(log, name, b));
        else if (k === "rom-device") {
          // A device whose writes also land in its RAM (byte-reversed, so a direct read shows
          // they went through the callback), as a flash or shadow-register device would.
          const dev = device(log, name, b);
          let self: MemoryRegion | undefined;
          const ops: IoOps = {
            ...dev,
            write(offset, size, value) {
              dev.write(offset, size, value);
              const bytes = self!.ramBytes();
              let v = BigInt(value);
              for (let k = size - 1; k >= 0; k--, v >>= 8n) if (offset + k < bytes.length) bytes[offset + k] = Number(v & 0xffn);
            },
          };
          self = r = mem.romDevice(name, size, ops, new Uint8Array(Number(size)).map((_, i) => (i * 3 + c) & 0xff));
        } else if (k === "container") r = mem.container(name, size * 4n);
        else {
          const t = descs[pick(b)];
          d.target = t;
          d.aliasOffset = BigInt((c >>> 3) % 0x3000);
          try {
            r = mem.alias(name, regions[pick(b)], d.aliasOffset, size);
          } catch (e) {
            errors.push((e as { code?: string }).code ?? String(e)); // the target was destroyed
            break;
          }
        }
        if (k === "container") d.size = size * 4n;
        regions.push(r);
        descs.push(d);
        if (views.length < 4 && (a >>> 4) % 3 === 0) views.push({ as: r.view(), index: regions.length - 1 });
        const parentIdx = [0, 0, pick(c)][c % 3];
        const parent = descs[parentIdx];
        const addr = parentIdx === 0 ? pickAddr(c >>> 2, []) : BigInt((c >>> 2) % 0x3000);
        tryOp(() => regions[parentIdx].addSubregion(addr, r, prio));
        if (errors.at(-1) === "ok") {
          d.parent = parent;
          d.addr = addr;
          d.seq = seq++;
          parent.children.push(d);
        }
        break;
      }
      case 5: {
        // move a mapped region (QEMU set_address re-adds it: newest among equals)
        const i = pick(a);
        if (i === 0) break;
        const addr = descs[i].parent === rootDesc ? pickAddr(b, []) : BigInt(b % 0x3000);
        tryOp(() => regions[i].setAddress(addr));
        if (errors.at(-1) === "ok" && descs[i].addr !== addr) {
          descs[i].addr = addr;
          if (descs[i].parent) descs[i].seq = seq++;
        }
        break;
      }
      case 6: {
        const i = pick(a);
        const on = b % 3 !== 0;
        if (c % 2) {
          tryOp(() => regions[i].setEnabled(on));
          descs[i].enabled = on;
        } else {
          tryOp(() => regions[i].setReadonly(!on));
          descs[i].readonly = !on;
        }
        break;
      }
      case 7: {
        // add an existing region under another (may be a cycle, or already mapped)
        const i = pick(a);
        const p = pick(b);
        const addr = BigInt(c % 0x3000);
        tryOp(() => regions[p].addSubregion(addr, regions[i], prio));
        if (errors.at(-1) === "ok") {
          descs[i].parent = descs[p];
          descs[i].addr = addr;
          descs[i].priority = prio;
          descs[i].seq = seq++;
          descs[p].children.push(descs[i]);
        }
        break;
      }
      case 9: {
        // ROMD mode on/off (WRONG_KIND for anything but a ROM device)
        const i = pick(a);
        tryOp(() => regions[i].setRomdMode(b % 2 === 0));
        break;
      }
      case 10: {
        // unmap and destroy inside the open transaction, then read through the old view
        const i = pick(a);
        if (i === 0) break;
        const d = descs[i];
        if (d.parent) {
          const p = descs.indexOf(d.parent);
          tryOp(() => regions[p].removeSubregion(regions[i]));
          if (errors.at(-1) === "ok") {
            d.parent.children.splice(d.parent.children.indexOf(d), 1);
            d.parent = null;
          }
        }
        tryOp(() => regions[i].destroy());
        if (errors.at(-1) === "ok") destroyed.add(i);
        const buf = new Uint8Array(24);
        const addr = pickAddr(c, descs.slice(1));
        probes.push(`${as.tryReadBytes(addr, buf)} ${Buffer.from(buf).toString("hex")} ${as.tryRead(addr, 4)} ${as.valueLo}`);
        break;
      }
    }
    if (c % 5 === 0) {
      mem.commit();
      snapshot();
      mem.begin();
    }
  }
  mem.commit();
  snapshot();
  return { w: { mem, regions, as, log, views, snapshots, probes, destroyed }, descs, errors, root: rootDesc };
}

export function runAccesses(w: World, descs: Desc[], ops: AccessOp[]): string[] {
  const out: string[] = [];
  const sizes = [1, 2, 4, 8] as const;
  const trace = w.mem.createTrace(Math.max(1, ops.length));
  for (const [op, sel, sz, value] of ops) {
    const addr = pickAddr(sel, descs.slice(1));
    const size = sizes[sz % 4];
    switch (op % 5) {
      case 0:
        out.push(`r ${w.as.tryRead(addr, size)} ${w.as.valueLo} ${size === 8 ? w.as.valueHi : 0}`);
        break;
      case 1:
        out.push(`w ${w.as.tryWrite(addr, size, BigInt(value) * 0x10001n)}`);
        break;
      case 2: {
        const buf = new Uint8Array((value % 70) + 1);
        out.push(`rb ${w.as.tryReadBytes(addr, buf)} ${Buffer.from(buf).toString("hex")}`);
        break;
      }
      case 3: {
        const buf = new Uint8Array((value % 40) + 1).map((_, i) => i + value);
        out.push(`wb ${w.as.tryWriteBytes(addr, buf)}`);
        break;
      }
      case 4:
        if (value & 1) trace.write(addr, size, BigInt(value) * 3n);
        else trace.read(addr, size);
        break;
    }
  }
  if (trace.length) {
    const r = w.as.replay(trace);
    out.push(`trace ${r.failed}`);
    for (let i = 0; i < trace.length; i++) out.push(`t ${trace.status(i)} ${trace.value64(i)}`);
  }
  return out;
}

export function flatNames(as: AddressSpace): string[] {
  return as.flatView().map((r) => `${r.start}-${r.last} ${r.region?.name}+${r.offsetInRegion}${r.readonly ? " ro" : ""}`);
}


/** Builds `topo` on both engines and runs `accesses`; returns the first disagreement, or null. */
export function firstDifference(topo: TopoOp[], accesses: AccessOp[]): string | null {
  const a = build("wasm", topo);
  const b = build("reference", topo);
  const same = (what: string, x: unknown, y: unknown) => {
    const [sx, sy] = [JSON.stringify(x, big), JSON.stringify(y, big)];
    return sx === sy ? null : `${what} differ:\nwasm:      ${sx}\nreference: ${sy}`;
  };
  const ra = () => runAccesses(a.w, a.descs, accesses);
  const rb = () => runAccesses(b.w, b.descs, accesses);
  let d = same("topology errors", a.errors, b.errors) ?? same("flat views", flatNames(a.w.as), flatNames(b.w.as)) ?? same("views at commits", a.w.snapshots, b.w.snapshots) ?? same("probes after destroy", a.w.probes, b.w.probes);
  if (d) return d;
  d = same("accesses", ra(), rb()) ?? same("device callbacks", a.w.log, b.w.log);
  if (d) return d;
  for (let i = 0; i < a.w.regions.length; i++) {
    if (a.w.destroyed.has(i)) continue;
    const r = a.w.regions[i];
    if ((r.kind === "ram" || r.kind === "rom" || r.kind === "rom-device") && !Buffer.from(r.ramBytes()).equals(Buffer.from(b.w.regions[i].ramBytes()))) return `RAM of ${r.name} differs`;
  }
  return null;
}

function big(_k: string, v: unknown): unknown {
  return typeof v === "bigint" ? `${v}n` : v;
}
