// Rings a host driver shares with a device in its own memory, seen from the device side: a
// submission ring the host produces into (tail) and the device consumes from (head), and a
// completion ring the device produces into with a phase tag (the bit that flips on every wrap
// so the host can tell new entries from old without reading a device register).
//
//   SubmissionRing  host writes entries, moves `tail` (doorbell or shadow); device reads
//                   entries at `head` and moves it. Empty: head == tail.
//   CompletionRing  device writes the entry at `tail` with `phase`, moves tail (phase flips
//                   when tail wraps to 0); host consumes and moves `head`. Full: one slot is
//                   always left free, (tail + 1) % size == head.
//
// Indices are kept modulo the ring size (NVMe queues; virtio's packed ring keeps the same
// wrap-counter idea). Entries are fixed size at base + index * entrySize.
//
// Shadow doorbells (NVMe 1.4 §5.7 Doorbell Buffer Config; virtio's VIRTIO_F_EVENT_IDX is the
// same scheme): the host writes each new tail/head into a word in its memory (the shadow
// doorbell) and rings the real (MMIO) doorbell only when the move crosses the word the device
// publishes next to it (the EventIdx): needEvent() below. The device therefore reads the
// shadow whenever it looks at a ring, and after draining one it publishes how far it got and
// looks once more, since the host may have written a tail before it saw the new EventIdx and
// will not ring for it (armSubmission). A full completion ring publishes the head it waits
// to move past, so the host rings when it frees a slot (CompletionRing.full).

/** Guest memory as a ring sees it: synchronous DMA (DmaApi satisfies this). */
export interface RingMemory {
  readSync(iova: bigint, dest: Uint8Array): void;
  writeSync(iova: bigint, src: Uint8Array): void;
}

/**
 * The host's event-index test (virtio vring_need_event; Linux nvme_dbbuf_need_event): whether
 * moving an index from `oldIdx` to `newIdx` passed `eventIdx`, in 16-bit wrapping arithmetic.
 * A device publishes `eventIdx` = the last index it has seen; any move past it then rings.
 */
export function needEvent(eventIdx: number, newIdx: number, oldIdx: number): boolean {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff);
}

const word = new Uint8Array(4);
const wordView = new DataView(word.buffer);
// A sequentially consistent store is a full barrier (x86: xchg). Between publishing an
// EventIdx and reading the shadow doorbell again it keeps the read from passing the store,
// the device half of the host's mb() in the same handshake (virtio's "enable notifications,
// mb, re-check"; Linux nvme_dbbuf_update_and_check_event).
const fenceCell = new Int32Array(new SharedArrayBuffer(4));
const fence = () => Atomics.store(fenceCell, 0, 0);

/** A shadow doorbell word and its EventIdx word, little-endian 32-bit, in host memory. */
export class ShadowDoorbell {
  constructor(
    readonly doorbell: bigint,
    readonly eventIdx: bigint,
  ) {}

  /** The value the host last wrote to the shadow doorbell. Throws when memory is unmapped. */
  read(mem: RingMemory): number {
    mem.readSync(this.doorbell, word);
    return wordView.getUint32(0, true);
  }

  /** Overwrites the shadow doorbell (the device keeps it in step with MMIO doorbells). */
  write(mem: RingMemory, value: number): void {
    wordView.setUint32(0, value >>> 0, true);
    mem.writeSync(this.doorbell, word);
  }

  /** Publishes the EventIdx: the host rings the MMIO doorbell once its index moves past it. */
  publish(mem: RingMemory, value: number): void {
    wordView.setUint32(0, value >>> 0, true);
    mem.writeSync(this.eventIdx, word);
  }
}

abstract class Ring {
  head = 0;
  tail = 0;
  /** Set while the host uses shadow doorbells for this ring. */
  shadow: ShadowDoorbell | null = null;

  constructor(
    readonly base: bigint,
    /** Entries, ≥ 2. */
    readonly size: number,
    readonly entrySize: number,
  ) {
    if (!Number.isInteger(size) || size < 2 || size > 0x10000) throw new RangeError(`ring size ${size} must be 2..65536`);
  }

  /** Address of entry `index`. */
  address(index: number): bigint {
    return this.base + BigInt(index * this.entrySize);
  }

  /** Whether `value` can be an index of this ring (a doorbell carrying anything else is
   *  invalid: NVMe §4.1 "Invalid Doorbell Write Value"). */
  valid(value: number): boolean {
    return Number.isInteger(value) && value >= 0 && value < this.size;
  }
}

/** A ring the host produces into; the device consumes from `head`. */
export class SubmissionRing extends Ring {
  /**
   * Drained, and the host will notify before it adds work: armSubmission found nothing new
   * after publishing EventIdx (or there is no shadow, so every new tail comes as a doorbell).
   * A device need not look at an idle ring until its doorbell rings (ring() clears it).
   */
  idle = false;

  get empty(): boolean {
    return this.head === this.tail;
  }

  /** Entries between head and tail. */
  get available(): number {
    return (this.tail - this.head + this.size) % this.size;
  }

  /** Entries readable in one contiguous read at head (up to the wrap), at most `max`. */
  contiguous(max: number): number {
    return Math.min(this.available, this.size - this.head, max);
  }

  /** Moves head past `n` consumed entries. */
  consume(n: number): void {
    this.head = (this.head + n) % this.size;
  }

  /** A tail doorbell write; false (and nothing changes) for an invalid value. The ring is
   *  no longer idle either way the value compares with the current tail. */
  ring(tail: number): boolean {
    if (!this.valid(tail)) return false;
    this.tail = tail;
    this.idle = false;
    return true;
  }

  /** Takes the tail from the shadow doorbell (an out-of-range value there is ignored).
   *  True when the tail moved. */
  refresh(mem: RingMemory): boolean {
    if (!this.shadow) return false;
    const tail = this.shadow.read(mem);
    if (!this.valid(tail) || tail === this.tail) return false;
    this.tail = tail;
    this.idle = false;
    return true;
  }

  /**
   * Call once the ring is drained (head == tail): publishes EventIdx = tail and reads the
   * shadow once more. True when the host added entries meanwhile (keep consuming: it will not
   * ring for them); otherwise the ring is idle until its next doorbell. Without a shadow
   * doorbell every new tail arrives as a doorbell: false, and idle.
   */
  armSubmission(mem: RingMemory): boolean {
    if (this.shadow) {
      this.shadow.publish(mem, this.tail);
      fence();
      if (this.refresh(mem)) return true;
    }
    this.idle = true;
    return false;
  }
}

/** A ring the device produces into with a phase tag; the host consumes from `head`. */
export class CompletionRing extends Ring {
  /** Phase tag of the entry at `tail`: 1 on the first pass (NVMe §4.6), flips on each wrap. */
  phase = 1;

  /** Entries posted that the host has not consumed (as of the last head it reported). */
  get pending(): boolean {
    return this.head !== this.tail;
  }

  /**
   * Whether there is no free slot. With a shadow doorbell the head is re-read first; if the
   * ring is still full, EventIdx = head is published so the host rings the MMIO doorbell when
   * it consumes an entry.
   */
  full(mem: RingMemory): boolean {
    if ((this.tail + 1) % this.size !== this.head) return false;
    if (!this.shadow) return true;
    this.refresh(mem);
    if ((this.tail + 1) % this.size !== this.head) return false;
    // Publish, then look once more: a head the host moved before it saw the new EventIdx
    // comes with no doorbell.
    this.shadow.publish(mem, this.head);
    fence();
    this.refresh(mem);
    return (this.tail + 1) % this.size === this.head;
  }

  /** Address of the slot the next entry goes to; write it with `phase`, then `advance()`. */
  slot(): bigint {
    return this.address(this.tail);
  }

  /** Moves tail past the entry just written; the phase flips when it wraps. */
  advance(): void {
    if (++this.tail === this.size) {
      this.tail = 0;
      this.phase ^= 1;
    }
  }

  /** A head doorbell write; false (and nothing changes) for an invalid value. */
  ring(head: number): boolean {
    if (!this.valid(head)) return false;
    this.head = head;
    return true;
  }

  /** Takes the head from the shadow doorbell (out-of-range values ignored). True if it moved. */
  refresh(mem: RingMemory): boolean {
    if (!this.shadow) return false;
    const before = this.head;
    this.ring(this.shadow.read(mem));
    return this.head !== before;
  }
}
