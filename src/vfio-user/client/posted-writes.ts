// When may a region write be posted (sent with NO_REPLY, not waited for)?
//
// PCI ordering: memory writes are posted transactions, I/O and configuration writes are not
// (a CPU's `out` / config write completes only when the device has it). A posted write still on
// the socket is ordered before any later request on the same socket — the server handles
// requests in order — but NOT before an access through a region mapped directly into the client:
// a read of a mapped BAR could pass a posted write to another BAR that the device has not yet
// seen. So the strict default posts memory-BAR writes only while no region of the device is
// mapped; `postRegardlessOfMappings` lifts that for drivers that order through config reads.

/** What a region index decodes to, for ordering purposes. */
export type RegionSpace = "memory" | "io" | "config" | "other";

export interface PostedWritePolicyOptions {
  /** Post memory-BAR writes at all (default true). False makes every write wait for its reply. */
  postMemoryWrites?: boolean;
  /** Post memory-BAR writes even while some region is mapped into the client (default false). */
  postRegardlessOfMappings?: boolean;
}

export type PostDecision =
  | { posted: true }
  | { posted: false; reason: "io-space" | "config-space" | "not-a-memory-bar" | "region-mapped" | "disabled" | "unknown-region" };

export class PostedWritePolicy {
  private readonly spaces = new Map<number, RegionSpace>();
  private readonly mapped = new Set<number>();
  readonly postMemoryWrites: boolean;
  readonly postRegardlessOfMappings: boolean;

  constructor(options: PostedWritePolicyOptions = {}) {
    this.postMemoryWrites = options.postMemoryWrites ?? true;
    this.postRegardlessOfMappings = options.postRegardlessOfMappings ?? false;
  }

  /** Record what a region is (from the BAR's space bit in config space, or its index). */
  setRegionSpace(region: number, space: RegionSpace): void {
    this.spaces.set(region, space);
  }

  regionSpace(region: number): RegionSpace | undefined {
    return this.spaces.get(region);
  }

  /** A region (or part of it) is now mapped directly into the client. */
  noteMapped(region: number): void {
    this.mapped.add(region);
  }

  noteUnmapped(region: number): void {
    this.mapped.delete(region);
  }

  get mappedRegionCount(): number {
    return this.mapped.size;
  }

  decide(region: number): PostDecision {
    const space = this.spaces.get(region);
    if (space === undefined) return { posted: false, reason: "unknown-region" };
    if (space === "io") return { posted: false, reason: "io-space" };
    if (space === "config") return { posted: false, reason: "config-space" };
    if (space !== "memory") return { posted: false, reason: "not-a-memory-bar" };
    if (!this.postMemoryWrites) return { posted: false, reason: "disabled" };
    if (this.mapped.size > 0 && !this.postRegardlessOfMappings) return { posted: false, reason: "region-mapped" };
    return { posted: true };
  }

  shouldPost(region: number): boolean {
    return this.canPost(region);
  }

  /** decide(region).posted without building the decision (the per-write check). */
  canPost(region: number): boolean {
    return (
      this.spaces.get(region) === "memory" &&
      this.postMemoryWrites &&
      (this.mapped.size === 0 || this.postRegardlessOfMappings)
    );
  }
}
