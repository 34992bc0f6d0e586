// edu-probe: drives QEMU's educational PCI device (docs/specs/edu.rst) from Linux userspace,
// with no kernel driver, through sysfs: BAR0 mmapped from .../resource0, config space through
// .../config. Built static by the guest test and run inside the guest's initramfs.
//
//   edu-probe /sys/bus/pci/devices/0000:00:02.0
//
// Prints "@@name value" lines the test collects; exits non-zero on the first failure.
// DMA and MSI need guest-physical addresses: a locked page's frame number comes from
// /proc/self/pagemap (readable with frame numbers by root). The MSI check points the
// capability's message address at such a page, as a device writing its message to memory.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EDU_ID 0x00
#define EDU_LIVENESS 0x04
#define EDU_FACTORIAL 0x08
#define EDU_STATUS 0x20
#define EDU_IRQ_STATUS 0x24
#define EDU_IRQ_RAISE 0x60
#define EDU_IRQ_ACK 0x64
#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_CNT 0x90
#define EDU_DMA_CMD 0x98
#define EDU_BUFFER 0x40000
#define EDU_DMA_MASK ((1ull << 28) - 1) /* edu's default dma_mask */
#define PAGE 4096

static volatile uint8_t *bar;
static int config_fd;

static void fail(const char *what) {
  printf("@@error %s: %s\n", what, strerror(errno));
  fflush(stdout);
  exit(1);
}

static uint32_t rd32(uint32_t off) { return *(volatile uint32_t *)(bar + off); }
static void wr32(uint32_t off, uint32_t v) { *(volatile uint32_t *)(bar + off) = v; }
static void wr64(uint32_t off, uint64_t v) { *(volatile uint64_t *)(bar + off) = v; }
static uint64_t rd64(uint32_t off) { return *(volatile uint64_t *)(bar + off); }

static uint32_t cfg_read(int off, int size) {
  uint32_t v = 0;
  if (pread(config_fd, &v, size, off) != size) fail("config read");
  return v;
}
static void cfg_write(int off, int size, uint32_t v) {
  if (pwrite(config_fd, &v, size, off) != size) fail("config write");
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

/** Waits until (read32(off) & mask) == 0, up to `seconds`; 0 on success. */
static int wait_clear(uint32_t off, uint64_t mask, int wide, double seconds) {
  double end = now_s() + seconds;
  while (((wide ? rd64(off) : rd32(off)) & mask) != 0) {
    if (now_s() > end) return -1;
    usleep(1000);
  }
  return 0;
}

/** A locked, zeroed page below edu's DMA mask, and its guest-physical address. */
static uint8_t *dma_page(uint64_t *phys) {
  int pm = open("/proc/self/pagemap", O_RDONLY);
  if (pm < 0) fail("open pagemap");
  for (int tries = 0; tries < 64; tries++) {
    uint8_t *p = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) fail("mmap page");
    memset(p, 0, PAGE);
    uint64_t entry;
    if (pread(pm, &entry, 8, ((uintptr_t)p / PAGE) * 8) != 8) fail("read pagemap");
    uint64_t pfn = entry & ((1ull << 55) - 1);
    if ((entry >> 63) && pfn) {
      *phys = pfn * PAGE;
      if (*phys + PAGE - 1 <= EDU_DMA_MASK) {
        close(pm);
        return p;
      }
    }
    /* keep the unsuitable page mapped so the next try gets another frame */
  }
  errno = ERANGE;
  fail("no locked page below the DMA mask");
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: edu-probe /sys/bus/pci/devices/DEVICE\n");
    return 2;
  }
  char path[512];
  snprintf(path, sizeof path, "%s/config", argv[1]);
  config_fd = open(path, O_RDWR);
  if (config_fd < 0) fail("open config");
  snprintf(path, sizeof path, "%s/resource0", argv[1]);
  int res = open(path, O_RDWR | O_SYNC);
  if (res < 0) fail("open resource0");
  struct stat st;
  if (fstat(res, &st) < 0) fail("stat resource0");
  printf("@@bar0-size %lld\n", (long long)st.st_size);
  bar = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, res, 0);
  if (bar == MAP_FAILED) fail("mmap resource0");

  /* Memory space and bus master (no driver enabled the device; DMA and MSI need mastering). */
  cfg_write(0x04, 2, cfg_read(0x04, 2) | 0x0006);

  printf("@@ident 0x%08x\n", rd32(EDU_ID));
  wr32(EDU_LIVENESS, 0x12345678);
  printf("@@liveness 0x%08x\n", rd32(EDU_LIVENESS));

  wr32(EDU_FACTORIAL, 10);
  if (wait_clear(EDU_STATUS, 0x01, 0, 5)) fail("factorial did not finish");
  printf("@@factorial 0x%08x\n", rd32(EDU_FACTORIAL));

  /* DMA: page -> edu buffer -> upper half of the page. */
  uint64_t phys;
  uint8_t *page = dma_page(&phys);
  for (int i = 0; i < 1024; i++) page[i] = (uint8_t)(i * 13 + 7);
  wr64(EDU_DMA_SRC, phys);
  wr64(EDU_DMA_DST, EDU_BUFFER);
  wr64(EDU_DMA_CNT, 1024);
  wr64(EDU_DMA_CMD, 0x1);
  if (wait_clear(EDU_DMA_CMD, 0x1, 1, 5)) fail("DMA to edu did not finish");
  wr64(EDU_DMA_SRC, EDU_BUFFER);
  wr64(EDU_DMA_DST, phys + 2048);
  wr64(EDU_DMA_CNT, 1024);
  wr64(EDU_DMA_CMD, 0x1 | 0x2);
  if (wait_clear(EDU_DMA_CMD, 0x1, 1, 5)) fail("DMA to RAM did not finish");
  printf("@@dma %s\n", memcmp(page, (const uint8_t *)page + 2048, 1024) == 0 ? "match" : "mismatch");

  /* MSI: the message address is a locked page; the device's interrupt is its data landing there. */
  uint64_t msi_phys;
  volatile uint32_t *msi_page = (volatile uint32_t *)dma_page(&msi_phys);
  int cap = cfg_read(0x34, 1);
  while (cap && cfg_read(cap, 1) != 0x05) cap = cfg_read(cap + 1, 1);
  if (!cap) {
    errno = ENOENT;
    fail("no MSI capability");
  }
  uint16_t ctrl = cfg_read(cap + 2, 2);
  cfg_write(cap + 4, 4, (uint32_t)msi_phys);
  if (ctrl & 0x80) {
    cfg_write(cap + 8, 4, (uint32_t)(msi_phys >> 32));
    cfg_write(cap + 12, 2, 0x4d53);
  } else {
    cfg_write(cap + 8, 2, 0x4d53);
  }
  cfg_write(cap + 2, 2, ctrl | 0x1);
  wr32(EDU_IRQ_RAISE, 0x8);
  double end = now_s() + 5;
  while (msi_page[0] == 0 && now_s() < end) usleep(1000);
  printf("@@msi-data 0x%04x\n", msi_page[0]);
  printf("@@irq-status 0x%x\n", rd32(EDU_IRQ_STATUS));
  wr32(EDU_IRQ_ACK, 0x8);
  printf("@@irq-status-after-ack 0x%x\n", rd32(EDU_IRQ_STATUS));
  fflush(stdout);
  return 0;
}
