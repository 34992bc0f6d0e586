// A minimal QMP client for tests: connects to QEMU's `-qmp unix:PATH,server=on,wait=off`
// socket, reads the greeting, negotiates capabilities, runs commands and awaits events.
import { createConnection, type Socket } from "node:net";
import { createInterface } from "node:readline";

type Json = Record<string, unknown>;

export class Qmp {
  private readonly replies: { resolve: (v: unknown) => void; reject: (e: Error) => void }[] = [];
  private readonly eventWaiters: { name: string; resolve: (e: Json) => void; reject: (e: Error) => void }[] = [];
  /** Every event seen, in order. */
  readonly events: Json[] = [];

  private constructor(private readonly socket: Socket, greeting: (g: Json) => void) {
    let greeted = false;
    createInterface({ input: socket }).on("line", (line) => {
      const msg = JSON.parse(line) as Json;
      if (!greeted && "QMP" in msg) {
        greeted = true;
        greeting(msg);
      } else if ("event" in msg) {
        this.events.push(msg);
        for (let i = 0; i < this.eventWaiters.length; i++) {
          if (this.eventWaiters[i]!.name === msg.event) this.eventWaiters.splice(i--, 1)[0]!.resolve(msg);
        }
      } else {
        const w = this.replies.shift();
        if (!w) return;
        if ("error" in msg) w.reject(new Error(`QMP: ${JSON.stringify(msg.error)}`));
        else w.resolve(msg.return);
      }
    });
    socket.on("close", () => {
      for (const w of [...this.replies.splice(0), ...this.eventWaiters.splice(0)]) w.reject(new Error("QMP socket closed"));
    });
  }

  /** Connects once QEMU is up (it creates the socket while starting), greeted and negotiated. */
  static async connect(path: string): Promise<Qmp> {
    const socket = createConnection(path);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    let qmp!: Qmp;
    await new Promise<void>((resolve) => (qmp = new Qmp(socket, () => resolve())));
    await qmp.execute("qmp_capabilities");
    return qmp;
  }

  execute(command: string, args?: Json): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.replies.push({ resolve, reject });
      this.socket.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + "\n");
    });
  }

  /** Resolves on the next event called `name`; rejects if the socket closes first. */
  nextEvent(name: string): Promise<Json> {
    return new Promise((resolve, reject) => this.eventWaiters.push({ name, resolve, reject }));
  }

  close(): void {
    this.socket.destroy();
  }
}
