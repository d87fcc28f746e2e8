//! Real media clients through the gateway: the video lives on node A;
//! `ffprobe` and `ffmpeg` read it through node B's gateway, which fetches
//! it from A on demand (Range requests, seeks to the end for the index).
//! Needs Debian's `ffmpeg` (`scripts/deps` installs it).

#![allow(clippy::unwrap_used)] // tests may panic on setup failures

mod common;

use std::process::Command;

fn tool(name: &str) -> Command {
    let found = Command::new(name).arg("-version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "{name} is missing: run scripts/deps (Debian package ffmpeg)"
    );
    Command::new(name)
}

#[tokio::test(flavor = "multi_thread")]
async fn ffprobe_and_ffmpeg_read_a_video_from_another_node_through_the_gateway() {
    let a = common::start().await;
    let b = common::start().await;
    // 4 s of 320x240 test pattern at 25 fps with a tone, index at the end
    // (no faststart), so a player must seek.
    let video = a.dir.path().join("clip.mp4");
    let made = tool("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=duration=4:size=320x240:rate=25",
        ])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:duration=4"])
        .args([
            "-c:v",
            "mpeg4",
            "-q:v",
            "5",
            "-c:a",
            "aac",
            "-shortest",
            "-y",
        ])
        .arg(&video)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let bytes = std::fs::read(&video).unwrap();
    let (id, ticket) = a.add_file("clip.mp4", &bytes).await;
    let hash: spore_core::Hash = id.parse().unwrap();
    assert!(!b.daemon.node().store().has_complete(&hash).unwrap());

    let url = format!("{}/b/{ticket}?filename=clip.mp4", b.base);
    let probe = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            tool("ffprobe")
                .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
                .args([
                    "-show_entries",
                    "stream=codec_name,width,height,nb_read_frames",
                ])
                .args(["-of", "default=noprint_wrappers=1"])
                .arg(&url)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&probe.stdout).to_string();
    assert!(
        probe.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    for want in [
        "codec_name=mpeg4",
        "width=320",
        "height=240",
        "nb_read_frames=100",
    ] {
        assert!(out.contains(want), "ffprobe said:\n{out}");
    }

    // ffmpeg decodes every frame and hashes the decoded video; the same
    // hash from the original file proves the bytes were right.
    let md5 = |input: String| {
        tokio::task::spawn_blocking(move || {
            let o = tool("ffmpeg")
                .args(["-v", "error", "-i"])
                .arg(&input)
                .args(["-map", "0:v", "-f", "md5", "-"])
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        })
    };
    let through_gateway = md5(url).await.unwrap();
    let original = md5(video.display().to_string()).await.unwrap();
    assert!(original.starts_with("MD5="), "{original}");
    assert_eq!(through_gateway, original);

    b.daemon.shutdown().await;
    a.daemon.shutdown().await;
}
