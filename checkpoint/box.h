/* Boxes of a tensor: an offset and an extent per dimension, in global coordinates, whose elements sit
 * row-major in a buffer of their own. Save copies the saved box out of the held one, load fills a held
 * box from the chunks of saved boxes, and `dtrain ckpt export` assembles whole tensors: all three go
 * through the one walk behind the functions below (box.c), which visits only the rows that the source
 * range and the destination share. Nothing here allocates, fails or knows about files. */
#ifndef DTRAIN_CHECKPOINT_BOX_H
#define DTRAIN_CHECKPOINT_BOX_H

#include <stddef.h>
#include <stdint.h>

#include "dtrain/ckpt.h"

/* nd >= 1 (a scalar is the box of one element, dtr__box_make(0, ...)); extents >= 0. */
typedef struct dtr__box {
  int nd;
  int64_t off[DTR_CKPT_MAX_DIMS], ext[DTR_CKPT_MAX_DIMS];
} dtr__box;

/* Elements of a box of ndim extents (ndim 0: one). -1 when an extent is negative or the count does not
 * fit in int64_t; the checkpointer's boxes were validated at registration and the manifest's by its
 * reader, so only unvalidated input sees -1. */
int64_t dtr__box_elems(int ndim, const int64_t *extent);

/* The box of ndim dimensions at off (NULL: zeros) with extents ext; ndim 0 gives the one-element box of
 * a scalar (off and ext are not read). */
dtr__box dtr__box_make(int ndim, const int64_t *off, const int64_t *ext);

/* 1 when a and b (same nd) share an element, with the shared box in *out (NULL: not wanted); else 0. */
int dtr__box_meet(const dtr__box *a, const dtr__box *b, dtr__box *out);

/* Copy into dst (all of box dbox, row-major) the elements of src that lie in dbox, where src holds
 * elements [first, first + count) of box sbox in row-major order (a chunk of a saved box, or all of it:
 * src points at element `first`). dbox and sbox have the same nd. es: bytes per element. mask (one bit
 * per element of dbox, or NULL) gets the copied elements' bits set. */
void dtr__box_copy(void *dst, const dtr__box *dbox, const void *src, const dtr__box *sbox, int64_t first,
                   int64_t count, size_t es, uint8_t *mask);

/* Set in mask (one bit per element of dbox) the elements that [first, first + count) of sbox cover. */
void dtr__box_mark(uint8_t *mask, const dtr__box *dbox, const dtr__box *sbox, int64_t first, int64_t count);

/* 1 when an element of dbox that [first, first + count) of sbox covers is not yet set in mask. */
int dtr__box_lacks(const uint8_t *mask, const dtr__box *dbox, const dtr__box *sbox, int64_t first,
                   int64_t count);

/* The first of n elements whose bit in mask is clear, or -1 when all are set. */
int64_t dtr__mask_first_clear(const uint8_t *mask, int64_t n);

#endif
