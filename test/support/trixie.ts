// The private Debian 13 root that test/peers/provision-trixie-root.sh provisions: QEMU 11.1
// (the real vfio-user client), the trixie kernel and its modules, busybox, fio, nvme-cli.
//
// QEMU runs straight from the root through the root's own dynamic loader, so it sees host
// paths (sockets, memfds, temporary files) without a chroot or bind mounts.
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";

/** Where the root is (the provisioning script's default unless WASMDEV_TRIXIE_ROOT says). */
export const trixieRootPath = process.env.WASMDEV_TRIXIE_ROOT ?? "/var/cache/wasmdev/trixie-root";

export interface TrixieRoot {
  root: string;
  /** Guest kernel (bzImage) and its version string (the modules' folder name). */
  kernel: string;
  kernelVersion: string;
  /** Runs a program of the root (absolute path inside it) through the root's loader. */
  command(program: string, args: string[]): { file: string; args: string[]; env: NodeJS.ProcessEnv };
  /** QEMU 11.1's qemu-system-x86_64 with its firmware and modules found in the root. */
  qemu(args: string[]): { file: string; args: string[]; env: NodeJS.ProcessEnv };
}

function locate(): TrixieRoot | string {
  const root = trixieRootPath;
  if (!existsSync(join(root, ".wasmdev-root"))) {
    return `no QEMU 11.1 root at ${root} (run test/peers/provision-trixie-root.sh)`;
  }
  const loader = join(root, "lib64", "ld-linux-x86-64.so.2");
  const libs = [join(root, "usr/lib/x86_64-linux-gnu"), join(root, "lib/x86_64-linux-gnu")].join(":");
  const boot = readdirSync(join(root, "boot")).find((f) => f.startsWith("vmlinuz-"));
  if (!boot) return `the root at ${root} has no kernel in /boot`;
  const command = (program: string, args: string[]) => ({
    file: loader,
    args: ["--library-path", libs, join(root, program), ...args],
    env: { ...process.env },
  });
  return {
    root,
    kernel: join(root, "boot", boot),
    kernelVersion: boot.slice("vmlinuz-".length),
    command,
    qemu(args) {
      const c = command("usr/bin/qemu-system-x86_64", [
        "-L", join(root, "usr/share/qemu"),
        "-L", join(root, "usr/share/seabios"),
        ...args,
      ]);
      c.env.QEMU_MODULE_DIR = join(root, "usr/lib/x86_64-linux-gnu/qemu");
      return c;
    },
  };
}

const located = locate();

/**
 * The root, or undefined with `trixieSkipReason` saying why. Under CI=true a missing root is
 * an error at import (CI provisions it; a silent skip would hide a broken install step).
 */
export const trixie: TrixieRoot | undefined = typeof located === "string" ? undefined : located;
export const trixieSkipReason: string | undefined = typeof located === "string" ? located : undefined;
if (trixieSkipReason && process.env.CI === "true") {
  throw new Error(`CI=true but the QEMU 11.1 peer is missing: ${trixieSkipReason}`);
}
