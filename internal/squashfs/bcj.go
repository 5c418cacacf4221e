package squashfs

import "encoding/binary"

// BCJ encoders, as the xz format defines the filters (start offset 0,
// one buffer that is the whole stream). Each turns the relative target of
// a call or branch into an absolute one, in place; the decoder in the
// kernel (lib/xz/xz_dec_bcj.c) and in liblzma turns it back. Only the
// encoding direction is here: images are read by the kernel and
// unsquashfs, and the tests decode through both.

func bcjEncode(b BCJ, buf []byte) {
	switch b {
	case BCJX86:
		bcjX86(buf)
	case BCJARM:
		bcjARM(buf)
	case BCJARMThumb:
		bcjARMThumb(buf)
	case BCJARM64:
		bcjARM64(buf)
	}
}

// x86: E8 (call rel32) and E9 (jmp rel32) whose displacement's top byte
// is 00 or FF (a near target). A state of the last bytes that were E8/E9
// without being converted keeps the filter from converting what is likely
// the inside of another instruction; it must match the decoder's exactly.
func bcjX86(buf []byte) {
	near := func(b byte) bool { return b == 0 || b == 0xFF }
	allowed := [8]bool{true, true, true, false, true, false, false, false}
	bitNumber := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	var mask uint32
	prev := ^uint32(4) // -5: position of the last E8/E9 seen
	for i := 0; i+5 <= len(buf); {
		op := buf[i]
		if op != 0xE8 && op != 0xE9 {
			i++
			continue
		}
		dist := uint32(i) - prev
		prev = uint32(i)
		if dist > 5 {
			mask = 0
		} else {
			for k := uint32(0); k < dist; k++ {
				mask = (mask & 0x77) << 1
			}
		}
		top := buf[i+4]
		if near(top) && allowed[(mask>>1)&7] && mask>>1 < 0x10 {
			src := binary.LittleEndian.Uint32(buf[i+1:])
			var dest uint32
			for {
				dest = src + uint32(i) + 5
				if mask == 0 {
					break
				}
				n := bitNumber[mask>>1]
				if !near(byte(dest >> (24 - n*8))) {
					break
				}
				src = dest ^ (1<<(32-n*8) - 1)
			}
			dest &= 0x01FFFFFF
			if dest&0x01000000 != 0 {
				dest |= 0xFF000000
			}
			binary.LittleEndian.PutUint32(buf[i+1:], dest)
			i += 5
			mask = 0
		} else {
			i++
			mask |= 1
			if near(top) {
				mask |= 0x10
			}
		}
	}
}

// ARM: BL with the condition "always" (top byte EB), a 24-bit word offset
// from the instruction + 8.
func bcjARM(buf []byte) {
	for i := 0; i+4 <= len(buf); i += 4 {
		if buf[i+3] != 0xEB {
			continue
		}
		off := uint32(buf[i]) | uint32(buf[i+1])<<8 | uint32(buf[i+2])<<16
		dest := (off<<2 + uint32(i) + 8) >> 2
		buf[i], buf[i+1], buf[i+2] = byte(dest), byte(dest>>8), byte(dest>>16)
	}
}

// ARM-Thumb: the two halves of a 32-bit BL (F000 F800 patterns), a
// 22-bit halfword offset from the instruction + 4.
func bcjARMThumb(buf []byte) {
	for i := 0; i+4 <= len(buf); i += 2 {
		if buf[i+1]&0xF8 != 0xF0 || buf[i+3]&0xF8 != 0xF8 {
			continue
		}
		off := uint32(buf[i+1]&7)<<19 | uint32(buf[i])<<11 | uint32(buf[i+3]&7)<<8 | uint32(buf[i+2])
		dest := (off<<1 + uint32(i) + 4) >> 1
		buf[i+1] = 0xF0 | byte(dest>>19)&7
		buf[i] = byte(dest >> 11)
		buf[i+3] = 0xF8 | byte(dest>>8)&7
		buf[i+2] = byte(dest)
		i += 2
	}
}

// ARM64: BL (26-bit word offset) and ADRP (21-bit page offset, only when
// it is within ±512 MiB so that the result stays canonical).
func bcjARM64(buf []byte) {
	le := binary.LittleEndian
	for i := 0; i+4 <= len(buf); i += 4 {
		pc := uint32(i)
		ins := le.Uint32(buf[i:])
		switch {
		case ins>>26 == 0x25: // BL
			ins = 0x94000000 | (ins+pc>>2)&0x03FFFFFF
			le.PutUint32(buf[i:], ins)
		case ins&0x9F000000 == 0x90000000: // ADRP
			imm := (ins>>29)&3 | (ins>>3)&0x001FFFFC
			if (imm+0x00020000)&0x001C0000 != 0 {
				continue
			}
			dest := imm + pc>>12
			ins &= 0x9000001F
			ins |= (dest & 3) << 29
			ins |= (dest & 0x0003FFFC) << 3
			ins |= (0 - dest&0x00020000) & 0x00E00000
			le.PutUint32(buf[i:], ins)
		}
	}
}
