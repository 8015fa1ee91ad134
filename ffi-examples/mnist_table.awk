# Turns the lines of `mnist` (`mnist-<codec>-c<C>.lsq: 93.0% (930/1000), ...`
# and `mnist-f32.lsq: ...`) into the README's markdown table: one row per
# codec, one column per C = 2..8, and the f32 accuracy repeated in its row.
# Exits 1 if a cell is missing.
{
    name = $1
    sub(/:$/, "", name)
    acc = $2
    sub(/%$/, "", acc)
    if (name == "mnist-f32.lsq") {
        f32 = acc
    } else if (match(name, /^mnist-[a-z]+-c[0-9]+\.lsq$/)) {
        split(substr(name, 7, length(name) - 10), part, "-c")
        cell[part[1], part[2]] = acc
    }
}
END {
    ncodecs = split("seed log uniform nf fp lut", codecs, " ")
    printf "| codec |"
    for (c = 2; c <= 8; c++) printf " C=%d |", c
    printf "\n|---|"
    for (c = 2; c <= 8; c++) printf "---|"
    printf "\n| f32 |"
    if (f32 == "") { print "\nmnist_table.awk: no mnist-f32.lsq line" > "/dev/stderr"; exit 1 }
    for (c = 2; c <= 8; c++) printf " %s |", f32
    printf "\n"
    for (k = 1; k <= ncodecs; k++) {
        printf "| %s |", codecs[k]
        for (c = 2; c <= 8; c++) {
            if (!((codecs[k], c) in cell)) {
                printf "\nmnist_table.awk: no line for mnist-%s-c%d.lsq\n", codecs[k], c > "/dev/stderr"
                exit 1
            }
            printf " %s |", cell[codecs[k], c]
        }
        printf "\n"
    }
}
