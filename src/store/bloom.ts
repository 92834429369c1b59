/**
 * A Bloom filter over strings: "definitely not seen" answers without touching SQLite, which is the common case for
 * the per-tx duplicate and replay checks. A "maybe" is always confirmed against the store.
 */
export class BloomFilter {
  private bits: Uint32Array;
  private readonly hashes = 7;
  private count = 0;
  private capacity: number;

  constructor(capacity: number) {
    this.capacity = Math.max(1024, capacity);
    // ~10 bits per entry gives about a 1% false-positive rate with 7 hash functions.
    this.bits = new Uint32Array(Math.ceil((this.capacity * 10) / 32));
  }

  get size(): number {
    return this.capacity;
  }

  /** True once the filter holds more than it was sized for: rebuild it bigger. */
  get full(): boolean {
    return this.count > this.capacity;
  }

  add(key: string): void {
    const [h1, h2] = hashPair(key);
    const m = this.bits.length * 32;
    for (let i = 0; i < this.hashes; i++) {
      const bit = (h1 + Math.imul(i, h2)) >>> 0;
      const at = bit % m;
      this.bits[at >>> 5] = (this.bits[at >>> 5] as number) | (1 << (at & 31));
    }
    this.count++;
  }

  mayContain(key: string): boolean {
    const [h1, h2] = hashPair(key);
    const m = this.bits.length * 32;
    for (let i = 0; i < this.hashes; i++) {
      const at = ((h1 + Math.imul(i, h2)) >>> 0) % m;
      if (((this.bits[at >>> 5] as number) & (1 << (at & 31))) === 0) return false;
    }
    return true;
  }
}

/** Two independent 32-bit FNV-1a style hashes (double hashing, Kirsch–Mitzenmacher). */
function hashPair(key: string): [number, number] {
  let a = 0x811c9dc5;
  let b = 0x01000193 ^ key.length;
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x5bd1e995);
    b ^= b >>> 15;
  }
  return [a >>> 0, (b | 1) >>> 0];
}

/**
 * Bloom filters that grow without a rescan: when the newest filter is full a new one, twice as large, takes the
 * next entries; a key may be in any of them.
 */
export class ScalableBloom {
  private readonly filters: BloomFilter[];

  constructor(capacity: number) {
    this.filters = [new BloomFilter(capacity)];
  }

  add(key: string): void {
    let last = this.filters[this.filters.length - 1] as BloomFilter;
    if (last.full) {
      last = new BloomFilter(last.size * 2);
      this.filters.push(last);
    }
    last.add(key);
  }

  mayContain(key: string): boolean {
    for (const filter of this.filters) if (filter.mayContain(key)) return true;
    return false;
  }
}
