// Test doubles for the "host" imports of assembly/iommu.
//
// iommu_miss answers host-domain misses from a fixed page table, chaining to domain - 1
// (specs create the map-table domain right before the host domain):
//   [0x4000_0000, 0x8000_0000)  2 MiB pages, RW, → iova - 0x4000_0000
//   [0x8000_0000, 0x8010_0000)  4 KiB pages, read-only, → iova - 0x8000_0000 + 0x10_0000
//   0x9000_0000 page            entry with an invalid mask (0xff0)
//   anything else               not mapped
// iommu_notify counts deliveries (read back through iommuStubNotifications()).
let notifications = 0;

export function iommuStubNotifications() {
  return notifications;
}

export function iommuStubs(ref) {
  const memory = () => ref.instance.exports.memory;
  return {
    iommu_miss(domain, iovaLo, iovaHi, _access, entry) {
      if (iovaHi !== 0) return 1;
      const iova = iovaLo >>> 0;
      let translated, mask, perm;
      if (iova >= 0x4000_0000 && iova < 0x8000_0000) {
        translated = (iova - 0x4000_0000) & ~0x1f_ffff; mask = 0x1f_ffff; perm = 3;
      } else if (iova >= 0x8000_0000 && iova < 0x8010_0000) {
        translated = ((iova - 0x8000_0000) & ~0xfff) + 0x10_0000; mask = 0xfff; perm = 1;
      } else if (((iova & ~0xfff) >>> 0) === 0x9000_0000) {
        translated = 0; mask = 0xff0; perm = 3;
      } else {
        return 1;
      }
      const m = new Uint32Array(memory().buffer, entry, 6);
      m[0] = translated >>> 0; m[1] = 0; m[2] = mask >>> 0; m[3] = 0; m[4] = perm; m[5] = domain - 1;
      return 0;
    },
    iommu_notify() {
      notifications++;
    },
  };
}
