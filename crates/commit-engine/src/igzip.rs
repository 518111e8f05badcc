//! ISA-L's igzip (Intel's Intelligent Storage Acceleration Library, linked
//! from Debian's `libisal2`): one buffer into one gzip member, stateless.
//! [`crate::pgzip`] uses it for gzip levels 1 to 3, igzip's own levels,
//! and for its sample of each chunk: on this project's 2-core machine it
//! deflates 1 MiB of text or binaries 1.7–2.3× as fast as libdeflate at
//! level 1, and random data 8× as fast (the whole parallel gzip:
//! `pgzip::tests::measure`).

use isal_sys::igzip_lib as sys;

/// A compressor at one igzip level, reused chunk after chunk.
pub(crate) struct Igzip {
    /// igzip's stream: 80 KiB of state, on the heap.
    stream: Box<sys::isal_zstream>,
    /// The level's working memory, as igzip asks for it.
    level_buf: Vec<u8>,
    level: u32,
}

impl Igzip {
    /// The highest igzip level.
    pub(crate) const MAX_LEVEL: u32 = 3;

    /// A compressor at `level`, 1 to [`Self::MAX_LEVEL`] (clamped).
    pub(crate) fn new(level: u32) -> Self {
        let level = level.clamp(1, Self::MAX_LEVEL);
        let size = match level {
            1 => sys::ISAL_DEF_LVL1_DEFAULT,
            2 => sys::ISAL_DEF_LVL2_DEFAULT,
            _ => sys::ISAL_DEF_LVL3_DEFAULT,
        };
        // SAFETY: `isal_zstream` is a C struct of integers, raw pointers and
        // arrays of them, for which all zeros is a valid value; every call
        // below sets it up with `isal_deflate_stateless_init` first.
        let stream = Box::new(unsafe { std::mem::zeroed::<sys::isal_zstream>() });
        Igzip {
            stream,
            level_buf: vec![0; size as usize],
            level,
        }
    }

    /// Compresses `input` into `out` as one gzip member (header, deflate
    /// stream, CRC-32 and size); its length, or `None` when it does not fit.
    pub(crate) fn compress(&mut self, input: &[u8], out: &mut [u8]) -> Option<usize> {
        let (Ok(avail_in), Ok(avail_out), Ok(level_buf_size)) = (
            u32::try_from(input.len()),
            u32::try_from(out.len()),
            u32::try_from(self.level_buf.len()),
        ) else {
            return None;
        };
        let s: &mut sys::isal_zstream = &mut self.stream;
        // SAFETY: `s` is a valid stream, borrowed exclusively.
        unsafe { sys::isal_deflate_stateless_init(s) };
        s.level = self.level;
        s.level_buf = self.level_buf.as_mut_ptr();
        s.level_buf_size = level_buf_size;
        s.gzip_flag = sys::IGZIP_GZIP as u16;
        s.end_of_stream = 1;
        s.flush = sys::NO_FLUSH as u16;
        // igzip only reads from `next_in`.
        s.next_in = input.as_ptr().cast_mut();
        s.avail_in = avail_in;
        s.next_out = out.as_mut_ptr();
        s.avail_out = avail_out;
        // SAFETY: `next_in`/`avail_in` and `next_out`/`avail_out` describe
        // buffers borrowed for this call, `level_buf`/`level_buf_size` one
        // we own, of the size igzip asks for at this level; a stateless
        // call keeps no pointer past its return.
        let rc = unsafe { sys::isal_deflate_stateless(s) };
        let n = s.total_out as usize;
        s.next_in = std::ptr::null_mut();
        s.next_out = std::ptr::null_mut();
        (rc == sys::COMP_OK as i32).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgzip::tests::gunzip;

    #[test]
    fn every_level_reads_back_and_a_small_buffer_is_refused() {
        let mut text = Vec::new();
        for i in 0..40_000u32 {
            text.extend_from_slice(format!("line {i} of {}\n", i % 97).as_bytes());
        }
        for level in 1..=Igzip::MAX_LEVEL {
            let mut z = Igzip::new(level);
            let mut out = vec![0u8; text.len() + 4096];
            // Twice: the stream is set up again for each buffer.
            for _ in 0..2 {
                let n = z.compress(&text, &mut out).expect("fits");
                assert!(n < text.len() / 3, "level {level}: {n} bytes");
                assert_eq!(gunzip(&out[..n]), text, "level {level}");
            }
            let n = z.compress(&[], &mut out).expect("an empty member");
            assert!(gunzip(&out[..n]).is_empty());
            assert_eq!(z.compress(&text, &mut out[..100]), None, "level {level}");
        }
    }
}
