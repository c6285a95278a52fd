fn main() {
    println!("netlens: under construction");
}
