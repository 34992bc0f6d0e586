// Builds the initramfs the Linux guest tests boot: busybox as init and shell, the kernel's nvme
// modules, fio and nvme-cli with their shared libraries, all taken from the provisioned Debian 13
// root, so guest, kernel and QEMU come from one place. An uncompressed newc cpio (the kernel
// copies it as is; decompressing 60 MB under TCG would cost seconds on every boot), cached
// outside the clone and keyed by the root's package stamp and this file.
//
// The test's own script travels as a second, tiny cpio appended to the first (the kernel
// unpacks concatenated archives in order), so the big one is built once.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Modules the nvme PCI driver needs, in load order (from the kernel's modules.dep). */
const NVME_MODULES = ["drivers/nvme/common/nvme-auth", "drivers/nvme/host/nvme-core", "drivers/nvme/host/nvme"];
/** Programs copied with their library closure. */
const PROGRAMS = ["usr/bin/fio", "usr/sbin/nvme"];
const LIB_DIRS = ["usr/lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu/ceph"];

/** The guest's /init: mounts, loads the nvme driver, runs /test.sh, reports its status, powers off. */
const INIT = `#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in ${NVME_MODULES.map((m) => basename(m)).join(" ")}; do insmod /lib/modules/$m.ko || echo "@@insmod-failed $m"; done
echo "@@guest-start"
sh -e /test.sh
echo "@@guest-exit $?"
poweroff -f
`;

export interface Entry {
  path: string;
  mode: number;
  data?: Buffer;
  /** Symlink target. */
  target?: string;
}

/** One newc cpio archive (the format the kernel's initramfs unpacker reads). */
export function newcArchive(entries: Entry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  const pad4 = (n: number) => Buffer.alloc((4 - (n % 4)) % 4);
  const add = (name: string, mode: number, body: Buffer) => {
    const fields = [ino++, mode, 0, 0, 1, 0, body.length, 0, 0, 0, 0, name.length + 1, 0];
    const header = "070701" + fields.map((f) => f.toString(16).padStart(8, "0")).join("");
    const head = Buffer.from(header + name + "\0", "latin1");
    parts.push(head, pad4(head.length), body, pad4(body.length));
  };
  for (const e of entries) {
    if (e.target !== undefined) add(e.path, 0o120777, Buffer.from(e.target));
    else if (e.data !== undefined) add(e.path, 0o100000 | e.mode, e.data);
    else add(e.path, 0o040000 | e.mode, Buffer.alloc(0));
  }
  add("TRAILER!!!", 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}

/** The archive holding the test's script as /test.sh and any files of its own (appended after the base initramfs). */
export function scriptArchive(script: string, files: Entry[] = []): Buffer {
  return newcArchive([...files, { path: "test.sh", mode: 0o755, data: Buffer.from(script) }]);
}

function libraryClosure(root: string, program: string): string[] {
  const out = execFileSync(join(root, "lib64/ld-linux-x86-64.so.2"), ["--library-path", LIB_DIRS.map((d) => join(root, d)).join(":"), "--list", join(root, program)], { encoding: "utf8" });
  const libs: string[] = [];
  for (const line of out.split("\n")) {
    const m = /=>\s+(\/\S+)/.exec(line);
    if (m) libs.push(m[1]!);
  }
  if (libs.length === 0) throw new Error(`no libraries listed for ${program}:\n${out}`);
  return libs;
}

/** Builds (or reuses) the base initramfs for `root` and kernel `kernelVersion`; returns its path. */
export function baseInitramfs(root: string, kernelVersion: string): string {
  const stamp = readFileSync(join(root, ".wasmdev-root"), "utf8");
  const self = readFileSync(fileURLToPath(import.meta.url));
  const key = createHash("sha256").update(stamp).update(kernelVersion).update(self).digest("hex").slice(0, 16);
  const cacheDir = process.env.WASMDEV_GUEST_CACHE ?? join(tmpdir(), "wasmdev-guest");
  const file = join(cacheDir, `initramfs-${key}.cpio`);
  if (existsSync(file)) return file;

  const entries: Entry[] = [];
  const dirs = new Set<string>();
  const dir = (p: string) => {
    const parts = p.split("/");
    for (let i = 1; i <= parts.length; i++) {
      const d = parts.slice(0, i).join("/");
      if (!dirs.has(d)) {
        dirs.add(d);
        entries.push({ path: d, mode: 0o755 });
      }
    }
  };
  for (const d of ["bin", "dev", "proc", "sys", "tmp", "lib/modules", "lib64", "usr/bin", "usr/sbin"]) dir(d);
  entries.push({ path: "init", mode: 0o755, data: Buffer.from(INIT) });
  entries.push({ path: "bin/busybox", mode: 0o755, data: readFileSync(join(root, "usr/bin/busybox")) });
  entries.push({ path: "bin/sh", target: "busybox", mode: 0o777 });

  // Modules are .ko.xz in the root; busybox's insmod takes plain ELF, so they are unpacked here
  // with the root's own static busybox (no host xz needed).
  for (const m of NVME_MODULES) {
    const ko = execFileSync(join(root, "usr/bin/busybox"), ["unxz", "-c", join(root, "usr/lib/modules", kernelVersion, "kernel", `${m}.ko.xz`)], { maxBuffer: 64 << 20 });
    entries.push({ path: `lib/modules/${basename(m)}.ko`, mode: 0o644, data: ko });
  }

  const copied = new Set<string>();
  for (const program of PROGRAMS) {
    entries.push({ path: program, mode: 0o755, data: readFileSync(join(root, program)) });
    for (const lib of libraryClosure(root, program)) {
      const rel = lib.slice(root.length + 1);
      const name = basename(rel);
      const inGuest = name.startsWith("ld-linux") ? "lib64/" + name : "lib/x86_64-linux-gnu/" + name;
      if (copied.has(inGuest)) continue;
      copied.add(inGuest);
      dir(dirname(inGuest));
      entries.push({ path: inGuest, mode: 0o755, data: readFileSync(lib) });
    }
  }
  // No ld.so.cache: Debian's loader searches /lib/x86_64-linux-gnu among its built-in paths.

  mkdirSync(cacheDir, { recursive: true });
  const tmp = `${file}.tmp.${process.pid}`;
  writeFileSync(tmp, newcArchive(entries));
  renameSync(tmp, file);
  return file;
}
